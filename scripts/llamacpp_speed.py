"""llama.cpp's side of `scripts/compare-llamacpp.sh`: the tests of `wick speed`, run through
llama-cpp-python's bindings to llama.cpp's C API (no Python in the timed loops beyond one
`llama_decode` call per step).

- prefill N: one N-token prompt into an empty KV cache, logits for its last token;
- decode N: N steps of one token each from an empty cache, logits every step;
- batched decode B x N: B sequences, each given a prompt first (not timed), then N steps that
  each decode one token of every sequence, logits for all.

Token ids follow `wick::commands::speed::bench_tokens`, so both programs process the same ids. Prints one
JSON object per test, with the fields `wick speed --json` prints.
"""

import argparse
import ctypes
import json
import statistics
import sys
import time

import llama_cpp as L


def bench_tokens(n, seed, vocab):
    low = min(vocab // 2, 100)
    span = max(vocab - low, 1)
    return [(i * 7919 + seed * 104729) % span + low for i in range(n)]


def make_context(model, threads, n_ctx, n_seq, flash_attn):
    p = L.llama_context_default_params()
    p.n_ctx = n_ctx
    p.n_batch = max(512, n_seq)
    p.n_ubatch = max(512, n_seq)
    p.n_seq_max = n_seq
    p.n_threads = threads
    p.n_threads_batch = threads
    # 1 = enabled; the enum is LLAMA_FLASH_ATTN_TYPE_{AUTO=-1, DISABLED=0, ENABLED=1}.
    p.flash_attn_type = 1 if flash_attn else 0
    if n_seq > 1 and any(f[0] == "kv_unified" for f in p._fields_):
        # Independent sequences: llama.h recommends per-sequence buffers.
        p.kv_unified = False
    ctx = L.llama_init_from_model(model, p)
    if not ctx:
        sys.exit("llama_init_from_model failed")
    return ctx


class Batch:
    def __init__(self, capacity):
        self.b = L.llama_batch_init(capacity, 0, 1)

    def fill(self, items):
        """items: (token, pos, seq, want_logits) tuples."""
        for i, (tok, pos, seq, logits) in enumerate(items):
            self.b.token[i] = tok
            self.b.pos[i] = pos
            self.b.n_seq_id[i] = 1
            self.b.seq_id[i][0] = seq
            self.b.logits[i] = 1 if logits else 0
        self.b.n_tokens = len(items)
        return self.b


def decode(ctx, batch):
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        sys.exit(f"llama_decode failed: {rc}")


def clear(ctx):
    L.llama_memory_clear(L.llama_get_memory(ctx), True)


def timed(reps, setup, body):
    runs = []
    for rep in range(reps + 1):
        setup()
        t = time.perf_counter()
        body()
        if rep > 0:
            runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def row(test, sequences, tokens, seconds):
    return {
        "test": test,
        "sequences": sequences,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": sequences * tokens / seconds,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", default="128,512")
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batch-prompt", type=int, default=128)
    ap.add_argument("--batch-steps", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--no-flash-attn", action="store_true")
    a = ap.parse_args()
    fa = not a.no_flash_attn

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit(f"cannot load {a.model}")
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    prefills = [int(x) for x in a.prefill.split(",") if x]
    rows = []

    n_ctx = max(prefills + [a.decode, 16]) + 16
    ctx = make_context(model, a.threads, n_ctx, 1, fa)
    batch = Batch(max(prefills + [1]))
    for n in prefills:
        toks = bench_tokens(n, 0, vocab)
        items = [(t, i, 0, i == n - 1) for i, t in enumerate(toks)]
        secs = timed(a.repetitions, lambda: clear(ctx), lambda: decode(ctx, batch.fill(items)))
        rows.append(row("prefill", 1, n, secs))
    if a.decode > 0:
        toks = bench_tokens(a.decode, 1, vocab)

        def steps():
            for p, t in enumerate(toks):
                decode(ctx, batch.fill([(t, p, 0, True)]))

        rows.append(row("decode", 1, a.decode, timed(a.repetitions, lambda: clear(ctx), steps)))
    L.llama_free(ctx)

    if a.batch > 0 and a.batch_steps > 0:
        per_seq = a.batch_prompt + a.batch_steps
        ctx = make_context(model, a.threads, a.batch * (per_seq + 16), a.batch, fa)
        batch = Batch(max(a.batch, a.batch_prompt, 1))
        streams = [bench_tokens(per_seq, s + 1, vocab) for s in range(a.batch)]

        def prompts():
            clear(ctx)
            for s, toks in enumerate(streams):
                if a.batch_prompt > 0:
                    items = [(t, i, s, False) for i, t in enumerate(toks[: a.batch_prompt])]
                    decode(ctx, batch.fill(items))

        def steps():
            for step in range(a.batch_steps):
                p = a.batch_prompt + step
                decode(ctx, batch.fill([(toks[p], p, s, True) for s, toks in enumerate(streams)]))

        secs = timed(a.repetitions, prompts, steps)
        rows.append(row("batched_decode", a.batch, a.batch_steps, secs))
        L.llama_free(ctx)

    for r in rows:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
