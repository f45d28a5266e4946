"""The Responses API's WebSocket mode through the pinned SDK's `client.responses.connect()`
(websockets under it), against the built binary and the real test model: a chain of
`store: false` turns over one connection through `previous_response_id`, error events that
leave the connection usable, and the key on the handshake."""

from __future__ import annotations

import openai
import pytest

from conftest import API_KEY, MODEL


def run_turn(conn, **create) -> tuple[list, object]:
    """Sends one response.create; returns the events up to the terminal one, and it."""
    conn.response.create(**{"model": MODEL, "max_output_tokens": 12, "temperature": 0, **create})
    events = []
    for event in conn:
        events.append(event)
        if event.type in ("response.completed", "response.incomplete", "response.failed", "error"):
            return events, event
    pytest.fail("the connection ended before the terminal event")


def test_a_store_false_chain_over_one_connection(client):
    with client.responses.connect() as conn:
        events, done = run_turn(conn, input="My name is Ana. Say hello.", store=False)
        assert done.type in ("response.completed", "response.incomplete"), done
        assert [e.sequence_number for e in events] == list(range(len(events)))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == done.response.output_text
        prev, prompt = done.response.id, done.response.usage.input_tokens
        for question in ["What is my name?", "Say it again."]:
            _, done = run_turn(conn, input=question, store=False, previous_response_id=prev)
            assert done.type in ("response.completed", "response.incomplete"), done
            r = done.response
            assert r.previous_response_id == prev
            assert r.usage.input_tokens > prompt
            assert r.usage.input_tokens_details.cached_tokens >= 16
            prev, prompt = r.id, r.usage.input_tokens
    # store: false kept nothing on the server: the POST route cannot continue the chain.
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="And now?", previous_response_id=prev, max_output_tokens=4)


def test_error_events_leave_the_connection_usable(client):
    with client.responses.connect() as conn:
        conn.send({"type": "response.create", "model": MODEL, "input": "hi", "stream": True})
        e = conn.recv()
        assert e.type == "error" and e.status == 400 and e.error.param == "stream", e
        _, done = run_turn(conn, input="Hi", temperature=9)
        assert done.type == "error" and done.error.param == "temperature", done
        _, done = run_turn(conn, input="Hi", store=False)
        assert done.type in ("response.completed", "response.incomplete"), done


def test_the_handshake_takes_the_key(keyed_server):
    good = keyed_server.client(api_key=API_KEY)
    with good.responses.connect() as conn:
        _, done = run_turn(conn, input="Hi", store=False, max_output_tokens=2)
        assert done.type in ("response.completed", "response.incomplete"), done
    bad = keyed_server.client(api_key="sk-wrong")
    with pytest.raises(Exception) as info:
        with bad.responses.connect() as conn:
            conn.recv()
    assert "401" in str(info.value)
