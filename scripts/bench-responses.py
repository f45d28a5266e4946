#!/usr/bin/env python3
"""Benchmarks (not a test) a five-turn conversation on a running `wick serve` four ways:
through `previous_response_id` (stored, over SSE; and `store: false` on one WebSocket, which
continues from the connection's own history) against the same conversation sent as full
history every turn with `store: false` (over SSE and over the WebSocket). Prints, per turn,
the time to the first text delta (TTFT), the total time to the terminal event, the input
tokens and the `cached_tokens` the prefix cache served, as a Markdown table.

Needs the pinned SDK and websockets (tests/e2e/requirements.txt; `scripts/e2e.sh` makes
.venv-e2e with them):  .venv-e2e/bin/python scripts/bench-responses.py --url http://127.0.0.1:8080
Greedy (temperature 0) with a fixed `max_output_tokens`, so every mode generates the same
tokens and only the transport and the way history reaches the server differ.
"""

from __future__ import annotations

import argparse
import statistics
import time

import openai

QUESTIONS = [
    "I am planning a garden with tomatoes, basil and peppers. What should I plant first?",
    "How often should I water them in a hot summer?",
    "Which of them needs the most sun?",
    "What pests should I watch for?",
    "Summarise your advice in one sentence.",
]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant_items(response) -> list[dict]:
    """The response's output as input items for the next full-history turn."""
    return [item.model_dump(exclude_none=True) for item in response.output]


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def event(self, event) -> None:
        if self.first is None and event.type == "response.output_text.delta":
            self.first = time.perf_counter()

    def row(self, mode: str, turn: int, response) -> dict:
        end = time.perf_counter()
        usage = response.usage
        return {
            "mode": mode,
            "turn": turn,
            "ttft_ms": 1000 * ((self.first or end) - self.start),
            "total_ms": 1000 * (end - self.start),
            "input": usage.input_tokens,
            "cached": usage.input_tokens_details.cached_tokens,
        }


def sse_turn(client, mode, turn, args, **create) -> tuple[dict, object]:
    timer = Timer()
    stream = client.responses.create(stream=True, **common(args), **create)
    final = None
    for event in stream:
        timer.event(event)
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
        elif event.type in ("response.failed", "error"):
            raise SystemExit(f"{mode} turn {turn} failed: {event}")
    return timer.row(mode, turn, final), final


def ws_turn(conn, mode, turn, args, **create) -> tuple[dict, object]:
    timer = Timer()
    conn.response.create(**common(args), **create)
    for event in conn:
        timer.event(event)
        if event.type in ("response.completed", "response.incomplete"):
            return timer.row(mode, turn, event.response), event.response
        if event.type in ("response.failed", "error"):
            raise SystemExit(f"{mode} turn {turn} failed: {event}")
    raise SystemExit(f"{mode}: the connection closed")


def common(args) -> dict:
    return {"model": args.model, "temperature": 0, "max_output_tokens": args.max_output_tokens}


def questions(mode: str) -> list[str]:
    """The conversation, its first words naming the mode: each mode's prompts share no cached
    blocks with another's beyond the chat template's opening (which the warm-up caches)."""
    return [f"({mode}) {QUESTIONS[0]}", *QUESTIONS[1:]]


def chained(turn_fn, target, mode, args, store) -> list[dict]:
    rows, prev = [], None
    for i, q in enumerate(questions(mode), 1):
        extra = {"previous_response_id": prev} if prev else {}
        row, r = turn_fn(target, mode, i, args, input=[user(q)], store=store, **extra)
        rows.append(row)
        prev = r.id
    return rows


def full_history(turn_fn, target, mode, args) -> list[dict]:
    rows, items = [], []
    for i, q in enumerate(questions(mode), 1):
        items.append(user(q))
        row, r = turn_fn(target, mode, i, args, input=list(items), store=False)
        rows.append(row)
        items.extend(assistant_items(r))
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| mode | turn | TTFT ms | total ms | input tokens | cached tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['mode']} | {r['turn']} | {r['ttft_ms']:.0f} | {r['total_ms']:.0f} "
            f"| {r['input']} | {r['cached']} |"
        )
    modes = dict.fromkeys(r["mode"] for r in rows)
    out += ["", "| mode | mean TTFT ms (turns 2-5) | mean total ms (turns 2-5) | cached / input (turns 2-5) |",
            "|---|---:|---:|---:|"]
    for m in modes:
        later = [r for r in rows if r["mode"] == m and r["turn"] > 1]
        cached = sum(r["cached"] for r in later) / max(1, sum(r["input"] for r in later))
        out.append(
            f"| {m} | {statistics.mean(r['ttft_ms'] for r in later):.0f} "
            f"| {statistics.mean(r['total_ms'] for r in later):.0f} | {cached:.0%} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", default="smol")
    p.add_argument("--api-key", default="unused")
    p.add_argument("--max-output-tokens", type=int, default=32)
    args = p.parse_args()
    client = openai.OpenAI(base_url=f"{args.url}/v1", api_key=args.api_key, max_retries=0, timeout=600)
    # One untimed turn first: the first request pays for warming the process up.
    sse_turn(client, "warm-up", 0, args, input="Hello", store=False)
    try:
        rows = chained(sse_turn, client, "SSE, previous_response_id (stored)", args, store=True)
    except openai.NotFoundError as e:
        # A server without a store (no --data-dir) cannot continue a stored chain.
        print(f"skipped SSE, previous_response_id (stored): {e}")
        rows = []
    rows += full_history(sse_turn, client, "SSE, full history, store false", args)
    with client.responses.connect() as conn:
        rows += chained(ws_turn, conn, "WebSocket, previous_response_id, store false", args, store=False)
    with client.responses.connect() as conn:
        rows += full_history(ws_turn, conn, "WebSocket, full history, store false", args)
    print(table(rows))


if __name__ == "__main__":
    main()
