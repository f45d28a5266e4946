"""`GET /openapi.json` against the running binary: real requests (bodies the other e2e tests
send) validate against the document's request schemas, and real responses (a chat completion,
streamed chunks, a completion, embeddings, the models list, tokenize, an error envelope) against
the response schema the document gives for their route, status and content type. With keys
configured the document needs one and says which operations do.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import API_KEY, MODEL

DOC_URI = "urn:wick-openapi"


def fetch(url: str, method: str = "GET", body=None, headers=None) -> tuple[int, dict, bytes]:
    """status, headers (lower-case names), body bytes."""
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture(scope="module")
def doc(server) -> dict:
    status, _, body = fetch(f"{server.url}/openapi.json")
    assert status == 200
    return json.loads(body)


def validator(doc: dict, schema: dict) -> jsonschema.Draft202012Validator:
    """A validator for `schema`, whose `#/components/...` refs point into `doc`."""
    registry = Registry().with_resource(DOC_URI, Resource(contents=doc, specification=DRAFT202012))
    return jsonschema.Draft202012Validator(rebase(schema), registry=registry)


def rebase(schema):
    """`#/components/...` refs as refs into the document's URI."""
    if isinstance(schema, dict):
        return {
            k: (DOC_URI + v if k == "$ref" and v.startswith("#") else rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [rebase(v) for v in schema]
    return schema


def component(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    assert name in doc["components"]["schemas"], name
    return validator(doc, {"$ref": f"#/components/schemas/{name}"})


def request_schema(doc: dict, method: str, path: str) -> jsonschema.Draft202012Validator:
    op = doc["paths"][path][method.lower()]
    return validator(doc, op["requestBody"]["content"]["application/json"]["schema"])


def response_schema(doc: dict, method: str, path: str, status: int, ctype: str):
    """The documented schema for that response, failing if the status or type is not there."""
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: status {status} not documented"
    resp = responses[str(status)]
    if "$ref" in resp:
        resp = doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    media = ctype.split(";")[0].strip()
    assert media in resp["content"], f"{method} {path} {status}: {media} not documented"
    return validator(doc, resp["content"][media]["schema"])


def call(server, doc, method: str, path: str, body=None, doc_path: str | None = None):
    """Sends a request whose body must match the request schema; checks the response against
    the response schema; returns (status, parsed JSON body)."""
    doc_path = doc_path or path
    if body is not None:
        request_schema(doc, method, doc_path).validate(body)
    status, headers, raw = fetch(f"{server.url}{path}", method, body)
    value = json.loads(raw)
    response_schema(doc, method, doc_path, status, headers["content-type"]).validate(value)
    return status, value


CHAT = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
    ],
    "max_tokens": 6,
    "temperature": 0,
    "n": 2,
    "logprobs": True,
    "top_logprobs": 2,
    "stop": ["\n\n"],
    "seed": 1,
    "logit_bias": {"0": -1.5},
}


def test_the_document_describes_every_operation(doc):
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ("POST", "/v1/chat/completions") in ops
    assert ("GET", "/v1/models/{id}") in ops
    assert ("GET", "/openapi.json") in ops
    # Every schema the document references resolves, and every component is a valid schema.
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["ChatCompletionRequest"])
    for name in doc["components"]["schemas"]:
        component(doc, name).is_valid({})


def test_chat_request_and_response_match(server, doc):
    status, body = call(server, doc, "POST", "/v1/chat/completions", CHAT)
    assert status == 200 and len(body["choices"]) == 2
    assert body["choices"][0]["logprobs"]["content"]


def test_streamed_chunks_match(server, doc):
    req = dict(CHAT, stream=True, stream_options={"include_usage": True})
    request_schema(doc, "POST", "/v1/chat/completions").validate(req)
    status, headers, raw = fetch(f"{server.url}/v1/chat/completions", "POST", req)
    assert status == 200
    response_schema(doc, "POST", "/v1/chat/completions", 200, headers["content-type"])
    chunk = component(doc, "ChatCompletionChunk")
    events = [line[len("data: "):] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        chunk.validate(json.loads(e))
    assert json.loads(events[-2])["usage"]["total_tokens"] > 0


def test_completion_with_echo_and_logprobs_matches(server, doc):
    req = {"model": MODEL, "prompt": ["Hello", "The sky"], "max_tokens": 3, "echo": True,
           "logprobs": 2, "temperature": 0}
    status, body = call(server, doc, "POST", "/v1/completions", req)
    assert status == 200 and len(body["choices"]) == 2
    # Prompt logprobs start with a null: the schema must allow it.
    assert body["choices"][0]["logprobs"]["token_logprobs"][0] is None
    req = {"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 2, "stream": True}
    request_schema(doc, "POST", "/v1/completions").validate(req)
    status, headers, raw = fetch(f"{server.url}/v1/completions", "POST", req)
    response_schema(doc, "POST", "/v1/completions", status, headers["content-type"])
    chunk = component(doc, "Completion")
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            chunk.validate(json.loads(line[len("data: "):]))


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings_match(server, doc, fmt):
    req = {"model": MODEL, "input": ["a cat", "a dog"], "encoding_format": fmt}
    status, body = call(server, doc, "POST", "/v1/embeddings", req)
    assert status == 200 and len(body["data"]) == 2


def test_models_and_tokenize_match(server, doc):
    status, body = call(server, doc, "GET", "/v1/models")
    assert status == 200 and body["data"][0]["id"] == MODEL
    status, _ = call(server, doc, "GET", f"/v1/models/{MODEL}", doc_path="/v1/models/{id}")
    assert status == 200
    status, body = call(server, doc, "GET", "/v1/models/org/none", doc_path="/v1/models/{id}")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    for req in [{"prompt": "Hi <|im_start|>"}, {"content": "é", "with_pieces": True},
                {"messages": [{"role": "user", "content": "hi"}]}, {"content": ""}]:
        status, body = call(server, doc, "POST", "/tokenize", req)
        assert status == 200, body
    status, body = call(server, doc, "POST", "/detokenize", {"tokens": [28, 29]})
    assert status == 200 and isinstance(body["prompt"], str)
    for path in ["/health", "/health/live", "/health/ready"]:
        assert call(server, doc, "GET", path)[0] == 200


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/chat/completions", {"messages": "not a list"}),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
        ("/v1/completions", {"prompt": {"an": "object"}}),
        ("/v1/embeddings", {"input": 3}),
        ("/detokenize", {"tokens": ["a"]}),
        ("/tokenize", {"prompt": 5}),
    ],
)
def test_a_body_the_schema_refuses_is_a_400_in_the_envelope(server, doc, path, body):
    """The schema is not looser than the server: what it refuses, the server refuses too, and
    the error matches the envelope."""
    assert not request_schema(doc, "POST", path).is_valid(body)
    status, headers, raw = fetch(f"{server.url}{path}", "POST", body)
    assert status == 400
    response_schema(doc, "POST", path, 400, headers["content-type"]).validate(json.loads(raw))


def test_with_keys_the_document_needs_one_and_says_where(keyed_server):
    status, _, body = fetch(f"{keyed_server.url}/openapi.json")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, body = fetch(f"{keyed_server.url}/openapi.json", headers={"authorization": f"Bearer {API_KEY}"})
    assert status == 200
    doc = json.loads(body)
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"bearer": []}, {"api_key": []}]
    assert "401" in chat["responses"]
    assert doc["paths"]["/health/live"]["get"].get("security", []) == []
    assert doc["components"]["securitySchemes"]["api_key"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key", "description": "`x-api-key: KEY`."
    }


def test_masked_top_logprobs_are_numbers(server, doc):
    """Regression: under an output grammar the masked alternatives' logprob is -inf, which
    went out as `null` (serde's JSON of a non-finite float): the schema, and the clients,
    want a number."""
    req = {"messages": [{"role": "user", "content": "Give JSON"}], "max_tokens": 4,
           "logprobs": True, "top_logprobs": 20,
           "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
               "type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}}}}
    status, body = call(server, doc, "POST", "/v1/chat/completions", req)
    assert status == 200
    tops = [t["logprob"] for c in body["choices"][0]["logprobs"]["content"] for t in c["top_logprobs"]]
    assert -9999.0 in tops and None not in tops
    req = {"prompt": "Give JSON", "max_tokens": 3, "logprobs": 5, "echo": True}
    status, body = call(server, doc, "POST", "/v1/completions", req)
    assert status == 200


@pytest.mark.parametrize("group_by", ["key", "model", "day"])
def test_usage_matches(server, doc, group_by):
    call(server, doc, "POST", "/v1/chat/completions", CHAT)
    status, body = call(server, doc, "GET", f"/v1/usage?group_by={group_by}", doc_path="/v1/usage")
    assert status == 200 and body["group_by"] == group_by
    status, body = call(server, doc, "GET", "/v1/usage?group_by=week", doc_path="/v1/usage")
    assert status == 400 and body["error"]["param"] == "group_by"
