"""The OpenAI-compatible API through the official `openai` client, against the built binary and
the real test model. Outputs are kept short: the debug build runs the model slowly."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import MODEL

CHAT = [{"role": "user", "content": "Name three colours."}]
# Special tokens of SmolLM2 (<|endoftext|>, <|im_start|>, <|im_end|>) banned: the text never ends.
NO_EOS = {"0": -100, "1": -100, "2": -100}


def chat_stream_text(chunks) -> tuple[dict[int, str], dict[int, str]]:
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    return texts, reasons


def test_models_list_names_the_served_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL]


def test_chat_stream_equals_non_stream_at_temperature_0(client):
    kw = dict(model=MODEL, messages=CHAT, max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**kw)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    texts, reasons = chat_stream_text(chunks)
    assert texts[0] == whole.choices[0].message.content
    assert reasons[0] == whole.choices[0].finish_reason
    assert all(ch.object == "chat.completion.chunk" and ch.usage is None for ch in chunks)


def test_completions_stream_equals_non_stream_at_temperature_0(client):
    kw = dict(model=MODEL, prompt="The capital of France is", max_tokens=12, temperature=0)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_include_usage_puts_usage_on_a_last_chunk_without_choices(client):
    kw = dict(model=MODEL, messages=CHAT, max_tokens=6, temperature=0)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    *body, last = chunks
    assert last.choices == []
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(ch.usage is None for ch in body)


def test_n_3_gives_three_choices(client):
    kw = dict(model=MODEL, messages=CHAT, max_tokens=6, temperature=1, seed=3, n=3)
    whole = client.chat.completions.create(**kw)
    assert sorted(c.index for c in whole.choices) == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in whole.choices)
    texts, reasons = chat_stream_text(client.chat.completions.create(stream=True, **kw))
    assert sorted(texts) == [0, 1, 2] and sorted(reasons) == [0, 1, 2]
    # Same seed, same choices, streamed or not.
    assert [texts[i] for i in range(3)] == [c.message.content for c in sorted(whole.choices, key=lambda c: c.index)]


def test_a_seed_reproduces_a_sampled_text(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=1, seed=1234)
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    assert a == b


def test_chat_logprobs_and_top_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or r.choices[0].finish_reason == "stop"
    for t in content:
        assert t.logprob <= 0 and isinstance(t.bytes, list)
        assert len(t.top_logprobs) == 3
        tops = [a.logprob for a in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the best one.
        assert t.top_logprobs[0].token == t.token
        assert math.isclose(t.top_logprobs[0].logprob, t.logprob, abs_tol=1e-5)


def test_completions_echo_with_prompt_logprobs(client):
    prompt = "The capital of France is"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)
    c = r.choices[0]
    assert c.text.startswith(prompt) and len(c.text) > len(prompt)
    lp = c.logprobs
    n = r.usage.prompt_tokens
    assert len(lp.tokens) == n + r.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    assert all(len(t) == 2 for t in lp.top_logprobs[1:])
    assert lp.text_offset[0] == 0 and lp.text_offset[n] == len(prompt)
    # Scoring only: echo with max_tokens 0.
    s = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert s.choices[0].text == prompt
    assert s.usage.completion_tokens == 0
    assert s.choices[0].logprobs.token_logprobs == lp.token_logprobs[:n]
    # Streamed: the first chunk carries the prompt.
    chunks = list(
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True, stream=True)
    )
    assert chunks[0].choices[0].text == prompt
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == c.text


def test_completions_take_token_ids_and_lists(client):
    r = client.completions.create(model=MODEL, prompt=[[504, 3575], [504]], max_tokens=2, temperature=0)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.prompt_tokens == 3


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_float_and_base64(client):
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today.", "The cat sat on the mat."]
    floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert floats.object == "list" and floats.model == MODEL
    vecs = [d.embedding for d in sorted(floats.data, key=lambda d: d.index)]
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    assert all(abs(norm(v) - 1) < 1e-5 for v in vecs)
    assert vecs[0] == vecs[2]
    assert max(abs(a - b) for a, b in zip(vecs[0], vecs[1])) > 1e-3
    # The client asks for base64 by default and decodes it.
    b64 = client.embeddings.create(model=MODEL, input=texts)
    for d in b64.data:
        assert max(abs(a - b) for a, b in zip(d.embedding, vecs[d.index])) < 1e-6
    # A batch equals each input alone.
    for text, v in zip(texts, vecs):
        alone = client.embeddings.create(model=MODEL, input=text, encoding_format="float").data[0].embedding
        assert max(abs(a - b) for a, b in zip(alone, v)) < 1e-5
    assert client.embeddings.create(model=MODEL, input=[[504, 3575]], dimensions=len(vecs[0])).data
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="")


def error_of(e: openai.APIStatusError) -> dict:
    body = e.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    "kw, param",
    [
        (dict(temperature=5.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(n=0), "n"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(logit_bias={"x": 1}), "logit_bias"),
        (dict(extra_body={"max_tokens": "many"}), None),
    ],
)
def test_bad_parameters_are_400(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=CHAT, **kw)
    err = error_of(e.value)
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param


def test_context_length_is_400_with_its_code(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=1_000_000)
    assert error_of(e.value)["code"] == "context_length_exceeded"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=CHAT)
    assert error_of(e.value)["code"] == "model_not_found"


def test_malformed_json_is_400(server):
    status, body = server.raw("POST", "/v1/chat/completions", b'{"messages": [')
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_a_body_over_the_limit_is_413(small_server):
    with pytest.raises(openai.APIStatusError) as e:
        small_server.client().completions.create(model=MODEL, prompt="x" * 100_000, max_tokens=1)
    assert e.value.status_code == 413
    assert error_of(e.value)["code"] == "request_too_large"


def wait_until_free(server) -> None:
    """Until the small server takes a request again: streams closed by an earlier test are
    cancelled at the worker's next step, a moment after the close."""
    c = server.client()
    deadline = time.monotonic() + 60
    while True:
        try:
            c.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
            return
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the small server stays full"
            time.sleep(0.05)


def test_a_full_queue_is_429(small_server):
    wait_until_free(small_server)
    c = small_server.client()
    long = dict(model=MODEL, prompt="Tell me a story.", max_tokens=500, logit_bias=NO_EOS, stream=True)
    running = c.completions.create(**long)
    next(iter(running))  # a token came: it holds the one running slot
    queued = c.completions.create(**long)  # headers back: it holds the one queue place
    try:
        with pytest.raises(openai.RateLimitError) as e:
            c.completions.create(model=MODEL, prompt="one more", max_tokens=1)
        assert error_of(e.value)["code"] == "queue_full"
        assert e.value.response.headers.get("retry-after")
    finally:
        queued.close()
        running.close()


def test_a_client_that_disconnects_mid_stream_frees_its_slot(small_server):
    wait_until_free(small_server)
    c = small_server.client()
    # Banned end tokens: left alone, this would run to the context's end (8000 tokens, minutes
    # even for a release build on a laptop).
    stream = c.completions.create(
        model=MODEL, prompt="Tell me a story.", max_tokens=8000, logit_bias=NO_EOS, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    # One running slot: this is served only once the abandoned request is gone.
    t = time.monotonic()
    r = small_server.client(timeout=30).completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert time.monotonic() - t < 30


def test_16_concurrent_streams_complete_and_equal_their_non_streamed_text(client):
    prompts = [f"Count from {i} to {i + 5}:" for i in range(4)]
    want = {p: client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0).choices[0].text for p in prompts}

    def run(i: int):
        p = prompts[i % 4]
        chunks = list(
            client.completions.create(
                model=MODEL, prompt=p, max_tokens=6, temperature=0, stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        reason = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
        return p, text, reason, chunks[-1].usage

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, range(16)))
    assert len(results) == 16
    for p, text, reason, usage in results:
        assert text == want[p]
        assert reason in ("stop", "length")
        assert usage is not None and usage.completion_tokens > 0


def test_a_draining_server_answers_503(fresh_server):
    """SIGTERM with a stream in flight: new requests get 503, the stream still runs to its
    end, and the process exits 0 once it is done."""
    c = fresh_server.client()
    stream = c.completions.create(
        model=MODEL, prompt="Tell me a story.", max_tokens=120, logit_bias=NO_EOS, stream=True
    )
    chunks = iter(stream)
    first = next(chunks)
    fresh_server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while fresh_server.raw("GET", "/health")[0] != 503:
        assert time.monotonic() < deadline, "never drained"
        time.sleep(0.05)
    with pytest.raises(openai.InternalServerError) as e:
        c.completions.create(model=MODEL, prompt="hi", max_tokens=1)
    assert e.value.status_code == 503
    assert error_of(e.value)["code"] == "shutting_down"
    rest = [ch for ch in chunks if ch.choices]
    reasons = [ch.choices[0].finish_reason for ch in rest if ch.choices[0].finish_reason]
    assert reasons == ["length"], "the in-flight stream ran to its end"
    text = first.choices[0].text + "".join(ch.choices[0].text for ch in rest)
    assert len(text) > 0
    assert fresh_server.proc.wait(timeout=60) == 0, fresh_server.log.read_text()
