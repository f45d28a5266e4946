"""OpenTelemetry traces from the built binary: `wick serve --otlp-traces-endpoint` exports OTLP
over HTTP/protobuf to a collector this test runs on 127.0.0.1 (decoded with the
`opentelemetry-proto` package). A chat request's SERVER span is named `chat smol`, carries the
GenAI attributes and the incoming `traceparent`'s trace id and parent, and has queue, prefill
and decode children inside it; the access-log line names the same trace id. The spans still
queued at SIGTERM are sent before the process exits. An unreachable collector fails no
request."""

from __future__ import annotations

import http.server
import re
import threading

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import MODEL, free_port, start_server
from test_access_log import access_line


class Collector:
    """An OTLP/HTTP trace receiver: every span POSTed to /v1/traces, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with collector.lock:
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            collector.spans.extend(ss.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id.hex() == trace_id]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def attrs(span: Span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [x.string_value for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind)
    return out


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


TRACE_PLAIN, PARENT_PLAIN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACE_STREAM, PARENT_STREAM = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def check_chat_trace(collector: Collector, trace: str, parent: str, usage, finish: str) -> None:
    spans = collector.of_trace(trace)
    servers = [s for s in spans if s.kind == Span.SpanKind.SPAN_KIND_SERVER]
    assert len(servers) == 1, spans
    server = servers[0]
    assert server.name == f"chat {MODEL}"
    assert server.parent_span_id.hex() == parent
    a = attrs(server)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.request.max_tokens"] == 6
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["gen_ai.response.finish_reasons"] == [finish]
    assert a["http.request.method"] == "POST" and a["url.path"] == "/v1/chat/completions"
    assert a["http.response.status_code"] == 200
    children = {s.name: s for s in spans if s.parent_span_id == server.span_id}
    assert sorted(children) == ["decode", "prefill", "queue"], spans
    times = [server.start_time_unix_nano]
    for name in ["queue", "prefill", "decode"]:
        times += [children[name].start_time_unix_nano, children[name].end_time_unix_nano]
    times.append(server.end_time_unix_nano)
    assert times == sorted(times), times
    assert children["decode"].end_time_unix_nano > children["queue"].start_time_unix_nano


def test_chat_spans_reach_the_collector_under_the_incoming_traceparent(tmp_path, collector):
    server = start_server(
        tmp_path, "--otlp-traces-endpoint", collector.url, "--log-format", "json",
        rust_log="wick=warn,wick::access=info",
    )
    try:
        client = server.client()
        ask = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
               "max_tokens": 6, "temperature": 0}
        plain = client.chat.completions.create(**ask, extra_headers={
            "traceparent": f"00-{TRACE_PLAIN}-{PARENT_PLAIN}-01", "x-request-id": "trace-plain"})
        chunks = list(client.chat.completions.create(
            **ask, stream=True, stream_options={"include_usage": True},
            extra_headers={"traceparent": f"00-{TRACE_STREAM}-{PARENT_STREAM}-01",
                           "x-request-id": "trace-stream"}))
        usage = next(c.usage for c in chunks if c.usage)
        finish = next(c.choices[0].finish_reason for c in chunks
                      if c.choices and c.choices[0].finish_reason)
        assert access_line(server, "trace-plain")["trace_id"] == TRACE_PLAIN
        assert access_line(server, "trace-stream")["trace_id"] == TRACE_STREAM
    finally:
        # The spans wait in the batch queue (5 s by default): SIGTERM must send them.
        server.stop()
    assert server.proc.returncode == 0, server.log.read_text()
    check_chat_trace(collector, TRACE_PLAIN, PARENT_PLAIN, plain.usage,
                     plain.choices[0].finish_reason)
    check_chat_trace(collector, TRACE_STREAM, PARENT_STREAM, usage, finish)


def test_an_unreachable_collector_fails_no_request(tmp_path, monkeypatch):
    # Export often, so that failed exports happen while the requests run.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    server = start_server(
        tmp_path, "--otlp-traces-endpoint", f"http://127.0.0.1:{free_port()}",
        "--log-format", "json", rust_log="wick=warn,wick::access=info",
    )
    try:
        client = server.client()
        for i in range(3):
            r = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=4,
                extra_headers={"x-request-id": f"unreachable-{i}"})
            assert r.choices[0].message.content is not None
            text = "".join(
                c.choices[0].text for c in client.completions.create(
                    model=MODEL, prompt="One, two,", max_tokens=4, stream=True)
                if c.choices)
            assert text
        # Traced without a traceparent: a new trace id of its own.
        assert re.fullmatch(r"[0-9a-f]{32}", access_line(server, "unreachable-0")["trace_id"])
        assert server.raw("GET", "/health")[0] == 200
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log.read_text()


def test_without_tracing_the_log_names_only_an_incoming_trace_id(tmp_path):
    server = start_server(tmp_path, "--log-format", "json", rust_log="wick=warn,wick::access=info")
    try:
        client = server.client()
        client.models.list(extra_headers={"x-request-id": "untraced"})
        client.models.list(extra_headers={
            "x-request-id": "untraced-tp", "traceparent": f"00-{TRACE_PLAIN}-{PARENT_PLAIN}-01"})
        assert access_line(server, "untraced")["trace_id"] == "-"
        assert access_line(server, "untraced-tp")["trace_id"] == TRACE_PLAIN
    finally:
        server.stop()
