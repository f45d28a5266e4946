"""The access log of the built binary: one JSON line per request (`--log-format json`, target
`wick::access`), written when the response is done, with the request id, the key's name, the
status, the tokens, TTFT and the finish reason; a streamed request's line carries its tokens
too, and a refused key's 401 has its line."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import API_KEY, MODEL, start_server


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory):
    s = start_server(
        tmp_path_factory.mktemp("wick-access"),
        "--api-key", API_KEY, "--log-format", "json",
        rust_log="wick=warn,wick::access=info",
    )
    yield s
    s.stop()


def access_line(server, request_id: str, timeout: float = 10) -> dict:
    """The access line of `request_id` in the server's log (it is written once the response
    body is done, a moment after the client has read it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in server.log.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            fields = line.get("fields", {})
            if line.get("target") == "wick::access" and fields.get("request_id") == request_id:
                return fields
        time.sleep(0.1)
    raise AssertionError(f"no access line for {request_id}:\n{server.log.read_text()}")


def test_a_streamed_and_a_plain_request_each_get_one_line(logged_server):
    client = logged_server.client(api_key=API_KEY)
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6,
        temperature=0, extra_headers={"x-request-id": "access-plain"},
    )
    line = access_line(logged_server, "access-plain")
    assert line["status"] == 200
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["key"].startswith("sha256:")
    assert API_KEY not in json.dumps(line), "the key itself is never logged"
    assert line["prompt_tokens"] == r.usage.prompt_tokens
    assert line["completion_tokens"] == r.usage.completion_tokens
    assert line["finish_reason"] == r.choices[0].finish_reason
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert line["client"].startswith("127.0.0.1:")

    stream = client.completions.create(
        model=MODEL, prompt="One, two,", max_tokens=5, temperature=0, stream=True,
        extra_headers={"x-request-id": "access-stream"},
    )
    text = "".join(c.choices[0].text for c in stream if c.choices)
    line = access_line(logged_server, "access-stream")
    assert line["status"] == 200 and line["completion_tokens"] == 5, (line, text)
    assert line["finish_reason"] == "length"


def test_a_refused_key_is_logged_without_the_key(logged_server):
    bad = logged_server.client(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list(extra_headers={"x-request-id": "access-401"})
    line = access_line(logged_server, "access-401")
    assert line["status"] == 401 and line["key"] == "-"
    assert "sk-wrong" not in json.dumps(line)


def test_an_embeddings_line_counts_its_input_tokens(logged_server):
    client = logged_server.client(api_key=API_KEY)
    r = client.embeddings.create(
        model=MODEL, input=["a cat", "a dog sat"], extra_headers={"x-request-id": "access-embed"}
    )
    line = access_line(logged_server, "access-embed")
    assert line["status"] == 200
    assert line["prompt_tokens"] == r.usage.prompt_tokens > 0
    assert line["completion_tokens"] == 0 and line["finish_reason"] == ""
