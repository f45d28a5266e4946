import { describe, expect, it } from "vitest";
import { ApiError, parseRetryAfter } from "../../src/api";
import { applyEvent, errorText, itemsToMessages, lastTurnItemIds, titleFromText, type Msg } from "../../src/state";
import { mapEvent } from "../../src/stream";

const items = [
  { id: "a", type: "message", role: "user", content: [{ type: "input_text", text: "hi" }] },
  { id: "b", type: "message", role: "assistant", content: [{ type: "output_text", text: "he" }, { type: "output_text", text: "llo" }] },
  { id: "c", type: "function_call" },
  { id: "d", type: "message", role: "user", content: [{ type: "input_text", text: "again" }] },
  { id: "e", type: "message", role: "assistant", content: [{ type: "output_text", text: "ok" }] },
];

describe("conversation items", () => {
  it("become user and assistant messages, other items left out", () => {
    const ms = itemsToMessages(items);
    expect(ms.map((m) => [m.role, m.text])).toEqual([
      ["user", "hi"],
      ["assistant", "hello"],
      ["user", "again"],
      ["assistant", "ok"],
    ]);
  });
  it("the last turn is the last user item and all after it", () => {
    expect(lastTurnItemIds(items)).toEqual(["d", "e"]);
    expect(lastTurnItemIds(items.slice(0, 3))).toEqual(["a", "b", "c"]);
    expect(lastTurnItemIds([])).toEqual([]);
  });
});

describe("a reply's events", () => {
  const start: Msg = { key: "k", role: "assistant", text: "", status: "streaming", startedAt: 1000 };
  it("grow the text and end with tokens, TTFT and tok/s", () => {
    let m = applyEvent(start, { type: "delta", text: "Hel" }, 1250);
    m = applyEvent(m, { type: "delta", text: "lo" }, 1300);
    expect(m.text).toBe("Hello");
    m = applyEvent(m, { type: "done", status: "completed", usage: { input_tokens: 7, output_tokens: 11 } }, 2250);
    expect(m.status).toBe("done");
    expect(m.stats).toEqual({ ttftMs: 250, outputTokens: 11, inputTokens: 7, tokPerSec: 10 });
  });
  it("a stop is cancelled, a cut reply incomplete, a failure an error", () => {
    expect(applyEvent(start, { type: "done", status: "cancelled", usage: null }, 5).status).toBe("cancelled");
    expect(applyEvent(start, { type: "done", status: "incomplete", usage: null }, 5).status).toBe("incomplete");
    const e = applyEvent(start, { type: "error", error: new ApiError(0, "gone", null, "dropped"), dropped: true }, 5);
    expect([e.status, e.dropped]).toEqual(["error", true]);
  });
});

describe("Responses events", () => {
  it("map deltas, ends and errors, and skip the rest", () => {
    expect(mapEvent({ type: "response.output_text.delta", delta: "x" })).toEqual({ type: "delta", text: "x" });
    expect(mapEvent({ type: "response.created" })).toBeNull();
    const done = mapEvent({ type: "response.completed", response: { status: "completed", usage: { input_tokens: 1, output_tokens: 2 } } });
    expect(done).toEqual({ type: "done", status: "completed", usage: { input_tokens: 1, output_tokens: 2 } });
    const ws = mapEvent({ type: "error", status: 429, error: { message: "busy", code: "queue_full" } });
    expect(ws?.type === "error" && [ws.error.status, ws.error.code]).toEqual([429, "queue_full"]);
    const sse = mapEvent({ error: { message: "late", code: null } });
    expect(sse?.type === "error" && sse.error.message).toBe("late");
  });
});

describe("errors and titles", () => {
  it("Retry-After in seconds or as a date", () => {
    expect(parseRetryAfter("3")).toBe(3);
    expect(parseRetryAfter("0.2")).toBe(1);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6);
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter("soon")).toBeNull();
  });
  it("401 asks for a key, 429 shows the wait", () => {
    expect(errorText(new ApiError(401, "no", null, null))).toMatch(/API key/);
    expect(errorText(new ApiError(429, "queue full", 2, "queue_full"))).toMatch(/try again in 2 s/);
  });
  it("a title is the first words of the first message", () => {
    expect(titleFromText("  hello \n world ")).toBe("hello world");
    expect(titleFromText("x".repeat(80))).toHaveLength(60);
  });
});
