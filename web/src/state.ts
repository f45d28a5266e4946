// The chat's state as pure functions: stored items to messages, a reply's events applied to
// its message (text, status, tokens, time to first token, tokens per second).

import type { Item } from "./api";
import type { ApiError } from "./api";
import type { TurnEvent } from "./stream";

export interface Stats {
  ttftMs: number | null;
  outputTokens: number | null;
  inputTokens: number | null;
  tokPerSec: number | null;
}

export interface Msg {
  key: string;
  role: "user" | "assistant";
  text: string;
  status: "streaming" | "done" | "cancelled" | "incomplete" | "error";
  error?: ApiError;
  dropped?: boolean;
  startedAt?: number;
  firstAt?: number;
  stats?: Stats;
}

let seq = 0;
export const newKey = () => `m${++seq}`;

function itemText(item: Item): string {
  return (item.content ?? [])
    .map((p) => (typeof p.text === "string" ? p.text : ""))
    .join("");
}

/** The conversation's items as messages: user and assistant text only. */
export function itemsToMessages(items: Item[]): Msg[] {
  const out: Msg[] = [];
  for (const it of items) {
    if (it.type !== "message" || (it.role !== "user" && it.role !== "assistant")) continue;
    out.push({ key: it.id || newKey(), role: it.role, text: itemText(it), status: "done" });
  }
  return out;
}

/** The ids of the last user item and every item after it (what a regenerate or edit redoes). */
export function lastTurnItemIds(items: Item[]): string[] {
  for (let i = items.length - 1; i >= 0; i--) {
    if (items[i].type === "message" && items[i].role === "user") return items.slice(i).map((x) => x.id);
  }
  return [];
}

/** `m` after the event `e`, arriving at `now` (ms). */
export function applyEvent(m: Msg, e: TurnEvent, now: number): Msg {
  switch (e.type) {
    case "delta":
      return { ...m, text: m.text + e.text, firstAt: m.firstAt ?? now };
    case "done": {
      const status = e.status === "cancelled" ? "cancelled" : e.status === "incomplete" ? "incomplete" : "done";
      const ttft = m.firstAt != null && m.startedAt != null ? m.firstAt - m.startedAt : null;
      const out = e.usage?.output_tokens ?? null;
      const genSecs = m.firstAt != null ? (now - m.firstAt) / 1000 : 0;
      const tokPerSec = out != null && out > 1 && genSecs > 0 ? (out - 1) / genSecs : null;
      return {
        ...m,
        status,
        stats: { ttftMs: ttft, outputTokens: out, inputTokens: e.usage?.input_tokens ?? null, tokPerSec },
      };
    }
    case "error":
      return { ...m, status: "error", error: e.error, dropped: e.dropped };
  }
}

/** What a failed reply says to the person. */
export function errorText(e: ApiError): string {
  if (e.status === 401) return "The server needs an API key: enter it above.";
  if (e.status === 429) {
    const wait = e.retryAfter != null ? `try again in ${e.retryAfter} s` : "try again shortly";
    return `The server is busy (429): ${e.message} — ${wait}.`;
  }
  return e.status ? `Error ${e.status}: ${e.message}` : e.message;
}

/** A conversation's title from its metadata, or its first words. */
export function titleOf(meta: Record<string, string> | undefined, fallback = "New chat"): string {
  return meta?.title?.trim() || fallback;
}

export function titleFromText(text: string): string {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > 60 ? `${t.slice(0, 57)}...` : t || "New chat";
}
