"""LangChain's OpenAI chat model (`langchain-openai`'s `ChatOpenAI`) against wick, as an
application would use it: invoke, stream, `bind_tools` with a tool round trip, and
`with_structured_output` by json_schema and by function_calling, streamed too. Written against
what LangChain must get back from an OpenAI-compatible server, not against our output."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from conftest import MODEL


def chat_model(server, **kw) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.url}/v1",
        api_key="unused",
        model=MODEL,
        temperature=0,
        max_retries=0,
        timeout=300,
        **kw,
    )


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"22 degrees and sunny in {city}"


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(max_length=20, description="The person's name")
    age: int = Field(ge=0, le=150, description="The person's age in years")
    # pydantic writes `uniqueItems` for a set (issue 16, item 5: it was a 400).
    hobbies: set[str] = Field(max_length=3, description="What the person likes doing")


ALICE = "Alice is 30 years old and likes chess."

PERSON_SCHEMA = {
    "title": "person",
    "description": "A person mentioned in the text.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_invoke_answers_with_text_and_usage(server):
    msg = chat_model(server, max_tokens=16).invoke(
        [SystemMessage("Answer in one short sentence."), HumanMessage("Say hello.")]
    )
    assert isinstance(msg, AIMessage)
    assert isinstance(msg.content, str) and msg.content.strip()
    assert msg.response_metadata["finish_reason"] in ("stop", "length")
    assert msg.response_metadata["model_name"] == MODEL
    assert msg.usage_metadata["input_tokens"] > 0
    assert 0 < msg.usage_metadata["output_tokens"] <= 16


def test_stream_adds_up_to_the_invoked_answer(server):
    model = chat_model(server, max_tokens=24, stream_usage=True)
    question = [HumanMessage("Count from one to five.")]
    chunks = list(model.stream(question))
    assert len(chunks) > 2, "streamed in pieces"
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert full.content == model.invoke(question).content, "greedy: streamed = not streamed"
    assert full.usage_metadata["output_tokens"] > 0
    assert full.response_metadata.get("finish_reason") in ("stop", "length")


def test_bind_tools_round_trip(server):
    question = HumanMessage("What is the weather in Paris?")
    forced = chat_model(server, max_tokens=80).bind_tools([get_weather], tool_choice="get_weather")
    ai = forced.invoke([question])
    assert len(ai.tool_calls) == 1, ai.tool_calls
    call = ai.tool_calls[0]
    assert call["name"] == "get_weather"
    assert isinstance(call["args"]["city"], str) and call["args"]["city"]
    assert call["id"].startswith("call_")
    assert ai.response_metadata["finish_reason"] == "tool_calls"

    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    answer = chat_model(server, max_tokens=32).bind_tools([get_weather]).invoke(
        [question, ai, result]
    )
    assert isinstance(answer.content, str)
    # The tool's result went back to the model in the prompt.
    bare = chat_model(server, max_tokens=1).bind_tools([get_weather]).invoke([question])
    assert answer.usage_metadata["input_tokens"] > bare.usage_metadata["input_tokens"]


def test_bind_tools_any_calls_a_tool(server):
    model = chat_model(server, max_tokens=80).bind_tools([get_weather], tool_choice="any")
    ai = model.invoke("What is the weather in Rome?")
    assert ai.tool_calls, ai
    assert all(c["name"] == "get_weather" for c in ai.tool_calls)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output_gives_the_model(server, method):
    extract = chat_model(server, max_tokens=120).with_structured_output(Person, method=method)
    person = extract.invoke(ALICE)
    assert isinstance(person, Person)
    assert person.name and 0 <= person.age <= 150
    assert len(person.hobbies) <= 3


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output_streamed(server, method):
    extract = chat_model(server, max_tokens=80).with_structured_output(PERSON_SCHEMA, method=method)
    parts = list(extract.stream(ALICE))
    assert parts, "something streamed"
    final = parts[-1]
    assert isinstance(final, dict), parts
    assert set(final) == {"name", "age"}, final
    assert isinstance(final["name"], str) and isinstance(final["age"], int)
    assert final == extract.invoke(ALICE), "greedy: streamed = not streamed"
    # Partial objects grow towards the final one (arguments stream as they are generated).
    assert len(parts) > 1, parts
