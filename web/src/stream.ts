// One reply, streamed from the Responses API: over the WebSocket mode when it opens, else over
// SSE (POST /v1/responses with stream: true). Cancelling closes the socket or aborts the fetch,
// and the server cancels the response.

import { ApiError, authHeaders, errorOf, getKey } from "./api";
import { SseParser } from "./sse";

export interface TurnRequest {
  model: string;
  input: string;
  conversation: string;
  instructions?: string;
  temperature?: number;
  top_p?: number;
  max_output_tokens?: number;
}

export interface Usage {
  input_tokens: number;
  output_tokens: number;
}

export type TurnEvent =
  | { type: "delta"; text: string }
  | { type: "done"; status: string; usage: Usage | null }
  | { type: "error"; error: ApiError; dropped?: boolean };

/** The page's event for one Responses API event (`null`: nothing to show). */
export function mapEvent(ev: any): TurnEvent | null {
  switch (ev?.type) {
    case "response.output_text.delta":
      return typeof ev.delta === "string" ? { type: "delta", text: ev.delta } : null;
    case "response.completed":
    case "response.incomplete":
      return { type: "done", status: ev.response?.status ?? "completed", usage: ev.response?.usage ?? null };
    case "response.failed": {
      const e = ev.response?.error;
      return { type: "error", error: new ApiError(500, e?.message ?? "the response failed", null, e?.code ?? null) };
    }
    case "error": {
      const e = ev.error ?? ev;
      return { type: "error", error: new ApiError(ev.status ?? 500, e?.message ?? "error", null, e?.code ?? null) };
    }
    default:
      // An SSE error after the first byte is `data: {"error": {...}}` without a type.
      if (ev?.error?.message) {
        return { type: "error", error: new ApiError(500, ev.error.message, null, ev.error.code ?? null) };
      }
      return null;
  }
}

export interface Turn {
  cancel(): void;
  /** "ws" or "sse", once known. */
  transport(): string;
}

type Sink = (e: TurnEvent) => void;

/** A sink that passes on events until the first terminal one. */
function once(sink: Sink): Sink {
  let ended = false;
  return (e) => {
    if (ended) return;
    if (e.type !== "delta") ended = true;
    sink(e);
  };
}

export function startTurn(req: TurnRequest, sink: Sink, mode: "auto" | "sse" = "auto"): Turn {
  const emit = once(sink);
  let transport = mode === "sse" ? "sse" : "ws";
  let cancel = () => {};
  const sse = () => {
    transport = "sse";
    cancel = startSse(req, emit);
  };
  if (mode === "sse" || typeof WebSocket === "undefined") sse();
  else {
    const wsCancel = startWs(req, emit, sse);
    // A socket that could not even be made has already fallen back (and set `cancel`).
    if (transport === "ws") cancel = wsCancel;
  }
  return { cancel: () => cancel(), transport: () => transport };
}

function wsUrl(): string {
  const u = new URL("/v1/responses", location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

/** The key travels as a subprotocol (`wick-key.KEY`): browsers cannot set headers on a socket. */
function protocols(): string[] {
  const key = getKey();
  return key ? ["wick", `wick-key.${key}`] : ["wick"];
}

function startWs(req: TurnRequest, emit: Sink, fallback: () => void): () => void {
  let ws: WebSocket;
  try {
    ws = new WebSocket(wsUrl(), protocols());
  } catch {
    fallback();
    return () => {};
  }
  let opened = false;
  let started = false;
  let done = false;
  let cancelled = false;
  ws.onopen = () => {
    opened = true;
    ws.send(JSON.stringify({ type: "response.create", ...req }));
  };
  ws.onmessage = (m) => {
    let ev: unknown;
    try {
      ev = JSON.parse(String(m.data));
    } catch {
      return;
    }
    const e = mapEvent(ev);
    if (!e) return;
    if (e.type === "delta") started = true;
    // Refused before it started (busy, loading): ask again over HTTP, whose answer carries
    // the wait in Retry-After.
    if (e.type === "error" && !started && (e.error.status === 429 || e.error.status === 503)) {
      done = true;
      ws.close(1000);
      fallback();
      return;
    }
    if (e.type !== "delta") {
      done = true;
      ws.close(1000);
    }
    emit(e);
  };
  ws.onclose = () => {
    if (cancelled || done) return;
    if (!opened) fallback();
    else emit({ type: "error", error: new ApiError(0, "the connection dropped", null, "dropped"), dropped: true });
  };
  return () => {
    cancelled = true;
    if (!done) emit({ type: "done", status: "cancelled", usage: null });
    ws.close(1000);
  };
}

function startSse(req: TurnRequest, emit: Sink): () => void {
  const ctl = new AbortController();
  (async () => {
    let r: Response;
    try {
      r = await fetch("/v1/responses", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ ...req, stream: true }),
        signal: ctl.signal,
      });
    } catch (e) {
      if (!ctl.signal.aborted) emit({ type: "error", error: new ApiError(0, `the server cannot be reached (${(e as Error).message})`, null, "network"), dropped: true });
      return;
    }
    if (!r.ok || !r.body) {
      emit({ type: "error", error: await errorOf(r) });
      return;
    }
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.push(value)) {
          if (ev.data === "[DONE]") continue;
          try {
            const e = mapEvent(JSON.parse(ev.data));
            if (e) emit(e);
          } catch {
            /* not JSON: skipped */
          }
        }
      }
      emit({ type: "error", error: new ApiError(0, "the stream ended before the response did", null, "dropped"), dropped: true });
    } catch {
      if (!ctl.signal.aborted) emit({ type: "error", error: new ApiError(0, "the connection dropped", null, "dropped"), dropped: true });
    }
  })();
  return () => {
    emit({ type: "done", status: "cancelled", usage: null });
    ctl.abort();
  };
}
