"""API keys through the official `openai` client: a wrong or missing key raises
`openai.AuthenticationError` (401, `invalid_api_key`), streamed or not; the right key works;
`/health*` needs none."""

from __future__ import annotations

import urllib.request

import openai
import pytest

from conftest import API_KEY, MODEL

CHAT = [{"role": "user", "content": "Say hi."}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_wrong_key_raises_authentication_error(keyed_server, stream):
    client = keyed_server.client(api_key="sk-wick-wrong")
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, stream=stream)
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    assert e.value.type == "invalid_request_error"
    assert "sk-wick-wrong" not in str(e.value)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_the_right_key_works(keyed_server):
    client = keyed_server.client(api_key=API_KEY)
    assert [m.id for m in client.models.list()] == [MODEL]
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, temperature=0, stream=True)
    )
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_health_needs_no_key(keyed_server):
    for path in ("/health", "/health/live", "/health/ready"):
        with urllib.request.urlopen(f"{keyed_server.url}{path}", timeout=30) as r:
            assert r.status == 200, path
    status, body = keyed_server.raw("GET", "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
