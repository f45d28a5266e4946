#!/usr/bin/env python3
"""Tiny random-weight GGUFs of every architecture wick runs, and llama.cpp's outputs on them.

Writes tests/data/archs/<name>.gguf (fixed seed; hidden 64, 4 query heads over 2 KV heads, 2-3
layers, f16 matrices, a few hundred tokens of vocabulary) and then runs llama.cpp on fixed
prompts through llama-cpp-python (logits_all) to record, in tests/data/archs/<name>.json:
the token ids of some strings, each prompt's ids, the logits of its last positions, and 12 greedy
tokens with llama.cpp's top-5 and top-1/top-2 margin at every step. The weights are our own
random numbers; the tests compare wick against these files.

Needs the `gguf` and `numpy` packages and llama-cpp-python, all in one venv:

    python3 -m venv /work/llamacpp-venv
    /work/llamacpp-venv/bin/pip install gguf==0.19.0 numpy==2.4.6
    CMAKE_ARGS=-DGGML_NATIVE=ON /work/llamacpp-venv/bin/pip install llama-cpp-python==0.3.36
    /work/llamacpp-venv/bin/python scripts/make-tiny-models.py

Two tokenizers, both with the merges learnt here from a small corpus: a byte-level BPE (GGUF
model `gpt2`, with the `tokenizer.ggml.pre` the architecture's real models declare) and a
SentencePiece-style one (model `llama`: scores, byte fallback, Gemma's and Phi-3's kind).

`mistral` is a `llama` file with `llama.attention.sliding_window`. llama.cpp ignores that key
for `llama`, so its reference is recorded from a copy of the file without the key, and only the
prompts that stay inside the window (prompt plus greedy tokens) are kept; the window itself is
checked by wick's tests (positions before it unchanged, after it changed) and, against
llama.cpp, through the Gemma models, whose windows llama.cpp applies.
"""

import json
import os
import sys
from collections import Counter

import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "archs")
SEED = 1234
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FF = 64, 4, 2, 16, 128
CTX = 256
WINDOW = 8
MISTRAL_WINDOW = 24
GREEDY_STEPS = 12

CORPUS = """The quick brown fox jumps over the lazy dog. Hello world! Hello, wick.
A small model writes a small answer: one, two, three, 1234567890 and 42.
def add(a, b):\n    return a + b\nfn main() { println!("hi"); }
The capital of France is Paris. The capital of Italy is Rome. What is it?
It's a test; we're testing the tokenizer's merges, they'll say. Don't stop.
Caf\u00e9 na\u00efve \u00fcber \u4f60\u597d\u4e16\u754c \U0001f600 \u2014 the end.\n\n"""

STRINGS = [
    "Hello world",
    " leading space and  two spaces",
    "numbers 1234567 and 42",
    "It's we're they'll",
    "def add(a, b):\n    return a + b",
    "Caf\u00e9 \u4f60\u597d \U0001f600",
    "unknownwordzzq xyz",
    "",
]

PROMPTS = [
    "Hello world",
    "The capital of France is",
    "def add(a, b):\n    return a + b\nfn main() { println!(\"hi\"); } The quick brown fox jumps",
    "A small model writes a small answer: one, two, three, 1234567890 and 42. It's a test",
]


def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_merges(words, n_merges):
    """Plain BPE over `words` (lists of symbols): the `n_merges` most frequent pairs, in order."""
    vocab = Counter(tuple(w) for w in words)
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in vocab.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = {}
        for w, c in vocab.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        vocab = merged
    return merges


def bpe_vocab(specials):
    """A byte-level BPE: specials, the 256 byte symbols, then ~200 merges."""
    table = bytes_to_unicode()
    words = [[table[b] for b in w.encode()] for w in CORPUS.replace("\n", " \n ").split(" ")]
    words = [[table[ord(" ")]] + w for w in words if w]
    merges = learn_merges(words, 200)
    tokens = list(specials) + [table[b] for b in range(256)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    types = [gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * (len(tokens) - len(specials))
    return tokens, types, [f"{a} {b}" for a, b in merges]


def spm_vocab(specials, unk):
    """A SentencePiece-style vocabulary: specials, 256 byte tokens, characters, merged pieces
    with scores (higher merges first), as llama.cpp's `llama` tokenizer reads them."""
    text = CORPUS.replace(" ", "\u2581")
    words = [["\u2581"] + list(w) for w in text.replace("\n", "\u2581\n\u2581").split("\u2581") if w]
    chars = sorted({c for w in words for c in w if c != "\n"})
    merges = learn_merges(words, 200)
    tokens = list(specials)
    types = [gguf.TokenType.CONTROL] * len(specials)
    types[specials.index(unk)] = gguf.TokenType.UNKNOWN
    scores = [0.0] * len(specials)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)
    seen = set(tokens)
    for i, c in enumerate(chars):
        if c not in seen:
            tokens.append(c)
            types.append(gguf.TokenType.NORMAL)
            scores.append(-1000.0 - i)
            seen.add(c)
    for i, (a, b) in enumerate(merges):
        if a + b not in seen:
            tokens.append(a + b)
            types.append(gguf.TokenType.NORMAL)
            scores.append(-float(i))
            seen.add(a + b)
    return tokens, types, scores


class Weights:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def mat(self, out, inp, scale=1.7):
        w = (self.rng.random((out, inp), dtype=np.float32) * 2 - 1) * scale / np.sqrt(inp)
        return w.astype(np.float16)

    def norm(self, n):
        return (0.8 + 0.4 * self.rng.random(n, dtype=np.float32)).astype(np.float32)

    def vec(self, n, scale=0.5):
        return ((self.rng.random(n, dtype=np.float32) * 2 - 1) * scale).astype(np.float32)


# name: (general.architecture, tokenizer kind, layers)
MODELS = {
    "llama": ("llama", "bpe:llama-bpe", 2),
    "mistral": ("llama", "spm", 2),
    "qwen2": ("qwen2", "bpe:qwen2", 2),
    "qwen3": ("qwen3", "bpe:qwen2", 2),
    "phi3": ("phi3", "spm", 2),
    "gemma2": ("gemma2", "spm:gemma", 2),
    "gemma3": ("gemma3", "spm:gemma", 3),
}


def write_tokenizer(w, kind):
    if kind.startswith("bpe"):
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tokens, types, merges = bpe_vocab(specials)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(kind.split(":")[1])
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
        return len(tokens)
    if kind == "spm:gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        tokens, types, scores = spm_vocab(specials, "<unk>")
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_unk_token_id(3)
        w.add_add_bos_token(True)
        w.add_add_space_prefix(False)
    else:
        # llama.cpp looks `<|endoftext|>` up in any model named phi3 (Phi-3's vocabulary has it).
        specials = ["<unk>", "<s>", "</s>", "<|endoftext|>"]
        tokens, types, scores = spm_vocab(specials, "<unk>")
        w.add_tokenizer_model("llama")
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    return len(tokens)


def write_model(name, path, with_window=True):
    arch, tok, layers = MODELS[name]
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"wick-tiny-{name}")
    vocab = write_tokenizer(w, tok)
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(layers)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0 if arch == "gemma3" else 10000.0)
    if name == "mistral" and with_window:
        w.add_sliding_window(MISTRAL_WINDOW)
    if arch == "gemma2":
        w.add_sliding_window(WINDOW)
        w.add_attn_logit_softcapping(2.0)
        w.add_final_logit_softcapping(5.0)
    if arch == "gemma3":
        w.add_sliding_window(WINDOW)
        w.add_sliding_window_pattern(3)
        w.add_rope_freq_base_swa(10_000.0)
    g = Weights(SEED + sum(map(ord, name)))
    emb_scale = 1.0 / np.sqrt(HIDDEN) if arch.startswith("gemma") else 1.0
    w.add_tensor("token_embd.weight", (g.mat(vocab, HIDDEN, 1.0 * np.sqrt(HIDDEN)) * emb_scale).astype(np.float16))
    w.add_tensor("output_norm.weight", g.norm(HIDDEN))
    if arch in ("llama", "qwen2", "phi3"):
        w.add_tensor("output.weight", g.mat(vocab, HIDDEN))
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(layers):
        t = lambda s: f"blk.{i}.{s}"
        w.add_tensor(t("attn_norm.weight"), g.norm(HIDDEN))
        if arch == "phi3":
            w.add_tensor(t("attn_qkv.weight"), g.mat(q + 2 * kv, HIDDEN))
        else:
            w.add_tensor(t("attn_q.weight"), g.mat(q, HIDDEN))
            w.add_tensor(t("attn_k.weight"), g.mat(kv, HIDDEN))
            w.add_tensor(t("attn_v.weight"), g.mat(kv, HIDDEN))
        if arch == "qwen2":
            w.add_tensor(t("attn_q.bias"), g.vec(q))
            w.add_tensor(t("attn_k.bias"), g.vec(kv))
            w.add_tensor(t("attn_v.bias"), g.vec(kv))
        if arch in ("qwen3", "gemma3"):
            w.add_tensor(t("attn_q_norm.weight"), g.norm(HEAD_DIM))
            w.add_tensor(t("attn_k_norm.weight"), g.norm(HEAD_DIM))
        w.add_tensor(t("attn_output.weight"), g.mat(HIDDEN, q))
        w.add_tensor(t("ffn_norm.weight"), g.norm(HIDDEN))
        if arch == "phi3":
            w.add_tensor(t("ffn_up.weight"), g.mat(2 * FF, HIDDEN))
        else:
            w.add_tensor(t("ffn_gate.weight"), g.mat(FF, HIDDEN))
            w.add_tensor(t("ffn_up.weight"), g.mat(FF, HIDDEN))
        w.add_tensor(t("ffn_down.weight"), g.mat(HIDDEN, FF))
        if arch.startswith("gemma"):
            w.add_tensor(t("post_attention_norm.weight"), g.norm(HIDDEN))
            w.add_tensor(t("post_ffw_norm.weight"), g.norm(HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def step_record(logits):
    lp = log_softmax(logits)
    order = np.argsort(-lp, kind="stable")
    return {
        "id": int(order[0]),
        "logprob": float(lp[order[0]]),
        "margin_top1_top2": float(lp[order[0]] - lp[order[1]]),
        "top5": [{"id": int(i), "logprob": float(lp[i])} for i in order[:5]],
    }


def llama_cpp_reference(path, prompts_ids):
    """Per prompt: logits of the last two positions and GREEDY_STEPS greedy steps."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=CTX, n_batch=CTX, n_threads=2, logits_all=True,
                verbose=False, seed=SEED, flash_attn=False)
    out = []
    for ids in prompts_ids:
        llm.reset()
        llm.eval(ids)
        last = [llm.scores[len(ids) - k - 1].tolist() for k in (1, 0)]
        steps = []
        logits = llm.scores[len(ids) - 1]
        for _ in range(GREEDY_STEPS):
            rec = step_record(logits)
            steps.append(rec)
            llm.eval([rec["id"]])
            logits = llm.scores[llm.n_tokens - 1]
        out.append({"last_logits": last, "steps": steps})
    return llm, out


def tokenize_cases(llm):
    cases = []
    for s in STRINGS:
        for special in (True, False):
            ids = llm.tokenize(s.encode(), add_bos=False, special=special)
            cases.append({"text": s, "parse_special": special, "ids": list(ids)})
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    only = sys.argv[1:] or list(MODELS)
    for name in only:
        path = os.path.join(OUT, f"{name}.gguf")
        write_model(name, path)
        ref_path = path
        if name == "mistral":
            ref_path = os.path.join(OUT, "mistral-nowindow.gguf.tmp")
            write_model(name, ref_path, with_window=False)
        from llama_cpp import Llama

        tok = Llama(model_path=ref_path, n_ctx=CTX, vocab_only=True, verbose=False)
        prompts = [list(tok.tokenize(p.encode(), add_bos=True, special=True)) for p in PROMPTS]
        llm, runs = llama_cpp_reference(ref_path, prompts)
        record = {
            "source": {"implementation": "llama.cpp via llama-cpp-python==0.3.36",
                       "script": "scripts/make-tiny-models.py", "seed": SEED},
            "architecture": MODELS[name][0],
            "tokenizer_cases": tokenize_cases(llm),
            "prompts": [
                {"text": p, "ids": ids, **run} for p, ids, run in zip(PROMPTS, prompts, runs)
            ],
        }
        if name == "mistral":
            record["window"] = MISTRAL_WINDOW
            record["prompts"] = [
                p for p in record["prompts"] if len(p["ids"]) + GREEDY_STEPS <= MISTRAL_WINDOW
            ]
            os.remove(ref_path)
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(record, f, indent=1)
        print(name, os.path.getsize(path), "bytes,", [len(p) for p in prompts], "prompt tokens")


if __name__ == "__main__":
    main()
