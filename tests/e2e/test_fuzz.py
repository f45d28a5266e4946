"""A fuzz run against the built binary: schemathesis generates requests for every operation of
the server's own `/openapi.json`, valid ones (positive) and ones the schema refuses (negative),
and checks each response: never a 5xx, a documented status and content type, a body that
matches the documented schema, and for refused data a 4xx. Then hand-written malformed and
oversized bodies (invalid JSON, wrong types, past `--max-body-bytes`, deeply nested, invalid
UTF-8, a wrong content type): each a 4xx in the OpenAI envelope. Finally the server still
answers a normal chat request, and its log holds no panic.

Bounded: `WICK_FUZZ_EXAMPLES` examples per operation and mode (default 100), generation capped
at 8 tokens (`--max-tokens-cap 8`), a fixed seed (`derandomize`), no shrinking; under three
minutes on two cores. `-s` prints each operation's status counts; `WICK_FUZZ_DEBUG=1` also
prints each 400's message.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import urllib.parse

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import MODEL, start_server

KEY = "sk-wick-fuzz"
AUTH = {"authorization": f"Bearer {KEY}"}
EXAMPLES = int(os.environ.get("WICK_FUZZ_EXAMPLES", "100"))
BODY_LIMIT = 65536
CAP = 8
CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ],
    GenerationMode.NEGATIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ],
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    s = start_server(
        tmp_path_factory.mktemp("wick-fuzz"),
        "--api-key", KEY, "--max-tokens-cap", str(CAP), "--max-body-bytes", str(BODY_LIMIT),
        "--request-timeout", "60",
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", headers=AUTH, timeout=30)


def integral(v):
    """`v` with integral floats (`3.0`) as integers, all the way down."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [integral(x) for x in v]
    if isinstance(v, dict):
        return {k: integral(x) for k, x in v.items()}
    return v


def tame(case) -> None:
    """Fits a positive case to what the document cannot say.

    - JSON Schema's `integer` takes `3.0`; the server's integer fields (serde) take `3` only,
      as the document's description says: integral floats are written as integers.
    - A generated `model` is never the served name (a 404), and a generated `max_tokens` is
      nearly always past `--max-tokens-cap` (a 400); both have their own tests. Here the model
      is named and the token counts are folded under the cap, so that the rest of the request
      is what is fuzzed.
    """
    if not isinstance(case.body, dict):
        return
    case.body = integral(case.body)
    if isinstance(case.body.get("model"), str):
        case.body["model"] = MODEL
    for field in ("max_tokens", "max_completion_tokens"):
        v = case.body.get(field)
        if isinstance(v, int) and not isinstance(v, bool) and v > CAP:
            case.body[field] = v % (CAP + 1)


def fuzz(operation, mode: GenerationMode, url: str) -> collections.Counter:
    """Runs the operation's cases; returns how many got each status."""
    statuses: collections.Counter = collections.Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if mode == GenerationMode.POSITIVE:
            tame(case)
        response = case.call(base_url=url, headers=AUTH, timeout=120)
        statuses[response.status_code] += 1
        if os.environ.get("WICK_FUZZ_DEBUG") and response.status_code == 400:
            print("   ", operation.label, response.text[:200])
        case.validate_response(response, checks=CHECKS[mode], headers=AUTH)

    run()
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzz_every_operation(fuzz_server, schema, mode):
    failures = []
    seen = {}
    operations = [op.ok() for op in schema.get_all_operations()]
    # Every documented operation but `GET /openapi.json`, which schemathesis leaves out (it is
    # the schema's own address).
    assert len(operations) == 27, " ".join(sorted(op.label for op in operations))
    for op in operations:
        if mode == GenerationMode.NEGATIVE and op.method.upper() == "GET" and "{" not in op.path:
            continue  # nothing to negate: no body, no parameters
        try:
            seen[op.label] = fuzz(op, mode, fuzz_server.url)
            print(op.label, dict(seen[op.label]))
        except Exception as e:  # noqa: BLE001 - every operation runs; all failures reported
            failures.append(f"{op.label}: {e}")
    assert fuzz_server.proc.poll() is None, "the server died"
    assert not failures, "\n\n".join(failures)
    if mode == GenerationMode.POSITIVE:
        # The fuzz gets past validation to the model, not only into the 400s.
        for label in ["POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings"]:
            assert seen[label][200] > 0, (label, seen[label])


def send(server, method: str, path: str, body: bytes, headers: dict | None = None, chunked=False):
    """A raw request (http.client sends whatever bytes and headers it is given): status, JSON."""
    u = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    h = {"content-type": "application/json", **AUTH, **(headers or {})}
    try:
        if chunked:
            chunks = iter([body[i:i + 8192] for i in range(0, len(body), 8192)])
            conn.request(method, path, body=chunks, headers=h, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=h)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (413) and closed before the whole body was sent
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_schema(depth: int) -> dict:
    s: dict = {"type": "string"}
    for _ in range(depth):
        s = {"type": "object", "properties": {"a": s}, "required": ["a"]}
    return s


MSG = '{"role": "user", "content": "hi"}'
MALFORMED = [
    ("invalid JSON", "/v1/chat/completions", b'{"messages": [', {}, 400),
    ("trailing garbage", "/v1/chat/completions", ('{"messages": [%s]} x' % MSG).encode(), {}, 400),
    ("not an object", "/v1/completions", b'["prompt"]', {}, 400),
    ("empty body", "/v1/embeddings", b"", {}, 400),
    ("messages a number", "/v1/chat/completions", b'{"messages": 5}', {}, 400),
    ("role a number", "/v1/chat/completions", b'{"messages": [{"role": 1, "content": "x"}]}', {}, 400),
    ("max_tokens a string", "/v1/chat/completions",
     ('{"messages": [%s], "max_tokens": "ten"}' % MSG).encode(), {}, 400),
    ("temperature past f32", "/v1/chat/completions",
     ('{"messages": [%s], "temperature": 1e39}' % MSG).encode(), {}, 400),
    ("a huge number", "/v1/completions", b'{"prompt": "x", "max_tokens": 1e99999}', {}, 400),
    ("n negative", "/v1/completions", b'{"prompt": "x", "n": -1}', {}, 400),
    ("token id past u32", "/v1/completions", b'{"prompt": [4294967296]}', {}, 400),
    ("input an object", "/v1/embeddings", b'{"input": {"a": 1}}', {}, 400),
    ("tokens strings", "/detokenize", b'{"tokens": ["a"]}', {}, 400),
    ("deeply nested content", "/v1/chat/completions",
     ('{"messages": [{"role": "user", "content": %s}]}' % nested(5000)).encode(), {}, 400),
    ("deeply nested extra field", "/v1/chat/completions",
     ('{"messages": [{"role": "user", "content": "x", "name": %s}]}' % nested(5000)).encode(), {}, 400),
    ("deeply nested unknown field", "/v1/completions",
     ('{"prompt": "x", "extra": %s}' % nested(5000)).encode(), {}, 400),
    ("invalid UTF-8 in a string", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', {}, 400),
    ("invalid UTF-8 in tokenize", "/tokenize", b'{"prompt": "\xc3"}', {}, 400),
    ("a lone surrogate escape", "/tokenize", b'{"prompt": "\\ud800"}', {}, 400),
    ("a form body", "/v1/chat/completions", b"messages=hi&max_tokens=4",
     {"content-type": "application/x-www-form-urlencoded"}, 400),
    ("an XML body", "/v1/completions", b"<prompt>hi</prompt>", {"content-type": "text/xml"}, 400),
    ("past --max-body-bytes", "/v1/chat/completions",
     ('{"messages": [{"role": "user", "content": "%s"}]}' % ("a" * (2 * BODY_LIMIT))).encode(), {}, 413),
]


@pytest.mark.parametrize("name,path,body,headers,status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_get_a_4xx_in_the_envelope(fuzz_server, name, path, body, headers, status):
    got, answer = send(fuzz_server, "POST", path, body, headers)
    assert got == status, (name, answer)
    assert isinstance(answer, dict) and set(answer["error"]) == {"message", "type", "param", "code"}, answer
    assert answer["error"]["type"] == "invalid_request_error"


def test_a_chunked_body_past_the_limit_is_413(fuzz_server):
    body = ('{"prompt": "%s"}' % ("a" * (2 * BODY_LIMIT))).encode()
    status, answer = send(fuzz_server, "POST", "/v1/completions", body, chunked=True)
    assert status == 413 and answer["error"]["code"] == "request_too_large"


def test_a_deeply_nested_output_schema_is_refused_or_served(fuzz_server):
    """A JSON schema nested as deep as the JSON reader allows goes to the grammar compiler: a
    400 or an answer, never a crash."""
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": nested_schema(60)}}}
    status, answer = send(fuzz_server, "POST", "/v1/chat/completions", json.dumps(body).encode())
    assert status in (200, 400), answer
    assert fuzz_server.proc.poll() is None


def test_the_server_answers_normally_afterwards(fuzz_server):
    client = fuzz_server.client(api_key=KEY)
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens > 0
    assert fuzz_server.proc.poll() is None
    log = fuzz_server.log.read_text(errors="replace")
    assert "panicked" not in log, log[-4000:]
