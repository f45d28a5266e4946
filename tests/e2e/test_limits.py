"""Per-key limits through the official `openai` client: past a key's requests-per-minute limit
the client raises `openai.RateLimitError` (429, `rate_limit_exceeded`) with OpenAI's
`x-ratelimit-*` headers and a `retry-after-ms` it honours; a successful response carries the
headers too; a key without limits has none."""

from __future__ import annotations

import pytest
import openai

from conftest import MODEL, start_server

CHAT = [{"role": "user", "content": "Say hi."}]

KEYS = """
[[keys]]
name = "limited"
key = "sk-limited"
requests_per_minute = 20
tokens_per_minute = 100000

[[keys]]
name = "free"
key = "sk-free"
"""


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    keys = d / "keys.toml"
    keys.write_text(KEYS)
    s = start_server(d, "--api-keys-file", str(keys))
    yield s
    s.stop()


def test_past_the_limit_the_client_raises_rate_limit_error(limited_server):
    client = limited_server.client(api_key="sk-limited", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=CHAT, max_tokens=2, temperature=0
    )
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "20"
    assert int(h["x-ratelimit-remaining-requests"]) in (18, 19)
    assert h["x-ratelimit-limit-tokens"] == "100000"
    assert 0 < int(h["x-ratelimit-remaining-tokens"]) <= 100000
    assert h["x-ratelimit-reset-requests"].endswith("s")
    assert raw.parse().choices[0].finish_reason in ("stop", "length")
    # Streamed requests empty the bucket (it refills one every 3 s): one of the next 25 is
    # refused.
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(25):
            list(
                client.chat.completions.create(
                    model=MODEL, messages=CHAT, max_tokens=1, temperature=0, stream=True
                )
            )
    assert e.value.status_code == 429
    assert e.value.code == "rate_limit_exceeded"
    assert e.value.type == "requests"
    headers = e.value.response.headers
    assert int(headers["retry-after-ms"]) > 0
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_the_client_retries_after_the_wait_it_is_told(limited_server):
    # The client retries a 429 after the `retry-after-ms` it is told (at most 3 s here: 20 a
    # minute refills one every 3 s), so the call succeeds after waiting.
    client = limited_server.client(api_key="sk-limited", max_retries=2)
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_a_key_without_limits_gets_no_limit_headers(limited_server):
    client = limited_server.client(api_key="sk-free", max_retries=0)
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=CHAT, max_tokens=2, temperature=0
        )
        assert "x-ratelimit-limit-requests" not in raw.headers
        assert raw.parse().choices[0].finish_reason in ("stop", "length")
