"""Constrained output through the official `openai` client: `response_format` (json_schema,
json_object) and tools / tool_choice, streamed and not. These need the constrained-decoding
feature (llguidance); they are written against the OpenAI contract, not against our output."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from conftest import MODEL

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "colours": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
    },
    "required": ["name", "age", "colours"],
    "additionalProperties": False,
}
ASK_PERSON = [{"role": "user", "content": "Invent a person: their name, age and favourite colours."}]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 30}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
SCHEMAS = {"get_weather": WEATHER["function"]["parameters"], "get_time": TIME["function"]["parameters"]}


def json_schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


def test_json_schema_output_validates(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK_PERSON, max_tokens=120, temperature=0,
        response_format=json_schema_format(PERSON),
    )
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    jsonschema.validate(json.loads(c.message.content), PERSON)


def test_json_schema_output_validates_streamed_and_sampled(client):
    chunks = client.chat.completions.create(
        model=MODEL, messages=ASK_PERSON, max_tokens=120, temperature=1, seed=5,
        response_format=json_schema_format(PERSON), stream=True,
    )
    text, reason = "", None
    for ch in chunks:
        for c in ch.choices:
            text += c.delta.content or ""
            reason = c.finish_reason or reason
    assert reason == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_json_object_mode_gives_a_json_object(client):
    # json_object bounds no string's length: a prompt that asks for a short object, so that the
    # small model closes it well within max_tokens (an open-ended one can loop inside a string).
    ask = 'Give a JSON object describing a cat with keys "name" and "age".'
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": ask}],
        max_tokens=100, temperature=0, response_format={"type": "json_object"},
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_an_invalid_schema_is_400(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=ASK_PERSON, max_tokens=5,
            response_format=json_schema_format({"type": "object", "properties": {"a": {"type": "no-such-type"}}}),
        )


def check_calls(calls, names: set[str]) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function"
        assert call.id
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize(
    "tool_choice, names",
    [
        ("required", {"get_weather", "get_time"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
    ],
)
def test_tool_calls_non_streamed(client, tool_choice, names):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, max_tokens=120, temperature=0,
        tools=[WEATHER, TIME], tool_choice=tool_choice,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.role == "assistant"
    check_calls(c.message.tool_calls, names)


@pytest.mark.parametrize(
    "tool_choice, names",
    [
        ("required", {"get_weather", "get_time"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
    ],
)
def test_tool_calls_streamed(client, tool_choice, names):
    chunks = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, max_tokens=120, temperature=0,
        tools=[WEATHER, TIME], tool_choice=tool_choice, stream=True,
    )
    calls: dict[int, dict] = {}
    reason = None
    for ch in chunks:
        for c in ch.choices:
            reason = c.finish_reason or reason
            for d in c.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"id": None, "type": None, "name": "", "arguments": ""})
                call["id"] = d.id or call["id"]
                call["type"] = d.type or call["type"]
                if d.function:
                    call["name"] += d.function.name or ""
                    call["arguments"] += d.function.arguments or ""
    assert reason == "tool_calls"
    assert calls and sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        assert call["id"] and call["type"] == "function"
        assert call["name"] in names
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_tool_choice_none_answers_in_text(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, max_tokens=10, temperature=0, tools=[WEATHER], tool_choice="none",
    )
    c = r.choices[0]
    assert not c.message.tool_calls
    assert c.finish_reason in ("stop", "length")


def test_a_named_tool_that_is_not_given_is_400(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=ASK_WEATHER, max_tokens=10, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "no_such_tool"}},
        )
