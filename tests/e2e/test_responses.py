"""`POST /v1/responses` through the official `openai` client (its `responses` resource), against
the built binary and the real test model: create with a string and with items, instructions and
the developer role, `responses.stream` (deltas add up to the final text), `responses.parse` with
a pydantic model, a function tool round trip, a `previous_response_id` chain of three turns with
cached tokens from turn 2, and a Codex-shaped request (store false, developer role, the full
history every turn, an extra non-function tool) whose second turn reports cached tokens."""

from __future__ import annotations

import json

import pydantic
import pytest

from conftest import MODEL

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_create_with_a_string_and_with_items(client):
    r = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=12, temperature=0)
    assert r.id.startswith("resp_")
    assert r.object == "response"
    assert r.status in ("completed", "incomplete")
    assert r.output_text
    assert r.output[0].type == "message" and r.output[0].id.startswith("msg_")
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 12
    assert r.usage.input_tokens_details.cached_tokens >= 0
    question = {"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
    kw = dict(model=MODEL, instructions="You are Wick.", max_output_tokens=12, temperature=0)
    plain = client.responses.create(input=[question], **kw)
    items = client.responses.create(
        input=[{"role": "developer", "content": "Answer in one word, in French, politely."}, question], **kw
    )
    assert items.instructions == "You are Wick."
    assert items.output_text
    assert items.usage.input_tokens >= plain.usage.input_tokens + 8, "the developer text is in the prompt"


def test_stream_deltas_equal_the_final_text(client):
    with client.responses.stream(
        model=MODEL, input="What is 2+2? Answer with just the number.", max_output_tokens=64,
        temperature=0,
    ) as stream:
        deltas = []
        kinds = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[1] == "response.in_progress"
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "".join(deltas) == final.output_text
    assert final.output_text


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_parse_with_a_pydantic_model(client):
    r = client.responses.parse(
        model=MODEL, input="Make up a person.", text_format=Person, max_output_tokens=60, temperature=0
    )
    assert r.status == "completed"
    assert isinstance(r.output_parsed, Person)


def test_a_function_tool_round_trip(client):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    r = client.responses.create(
        model=MODEL, input=[question], tools=[WEATHER], tool_choice="required",
        max_output_tokens=60, temperature=0,
    )
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls, r.output
    call = calls[0]
    assert call.name == "get_weather" and call.id.startswith("fc_")
    assert isinstance(json.loads(call.arguments)["city"], str)
    r2 = client.responses.create(
        model=MODEL,
        input=[question, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}],
        tools=[WEATHER], max_output_tokens=24, temperature=0,
    )
    assert r2.output_text or any(o.type == "function_call" for o in r2.output)
    assert r2.usage.input_tokens > r.usage.input_tokens


def test_a_previous_response_id_chain_of_three_turns_reuses_the_cache(client):
    r1 = client.responses.create(
        model=MODEL, input="My name is Ada. Tell me a short fact about stars.",
        instructions="Be brief.", max_output_tokens=24, temperature=0,
    )
    r2 = client.responses.create(
        model=MODEL, previous_response_id=r1.id, input="And one about the moon.",
        max_output_tokens=24, temperature=0,
    )
    r3 = client.responses.create(
        model=MODEL, previous_response_id=r2.id, input="What is my name?",
        max_output_tokens=24, temperature=0,
    )
    assert r2.previous_response_id == r1.id and r3.previous_response_id == r2.id
    # Each turn's prompt holds the earlier turns.
    assert r1.usage.input_tokens < r2.usage.input_tokens < r3.usage.input_tokens
    assert r2.usage.input_tokens_details.cached_tokens > 0
    assert r3.usage.input_tokens_details.cached_tokens > r2.usage.input_tokens_details.cached_tokens


def test_a_codex_shaped_conversation_is_answered_and_cached(client):
    """What Codex sends: store false, a developer message, the whole history every turn, tools
    beside its functions that wick does not run (tool_choice auto)."""
    tools = [
        {"type": "function", "name": "shell", "description": "Run a shell command",
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                        "required": ["command"]}, "strict": False},
        {"type": "web_search"},
    ]
    history = [
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "You are a coding agent. Be concise."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What does ls do?"}]},
    ]
    kw = dict(model=MODEL, instructions="You are Codex.", tools=tools, tool_choice="auto", store=False,
              parallel_tool_calls=False, max_output_tokens=24, temperature=0)
    first = client.responses.create(input=history, **kw)
    assert first.status in ("completed", "incomplete")
    assert first.store is False
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And pwd?"}]})
    second = client.responses.create(input=history, **kw)
    assert second.status in ("completed", "incomplete")
    assert second.usage.input_tokens_details.cached_tokens > 0
