#!/usr/bin/env python3
"""Random-weight GGUFs in real models' shapes, quantized by llama.cpp's own quantizer.

For benchmarks at the sizes people run (issue 15): the weights are random (normal, std 0.02;
norms 1), the tokenizer and chat template are the test model's (SmolLM2-135M-Instruct, copied
from its GGUF), so the vocabulary is 49,152 rather than the real model's. Writes, under target/
(git-ignored, never committed):

    target/shape-models/<shape>.f16.gguf          the source, f16 matrices
    target/shape-models/<shape>.<TYPE>.gguf       quantized by llama_model_quantize

Shapes (hidden, FFN, layers, query heads, KV heads; head dim 64 / 128):
    llama-3.2-1b   2048,  8192, 16, 32, 8   tied embeddings
    llama-3.1-8b   4096, 14336, 32, 32, 8   separate output matrix
Types: Q4_K_M, Q5_K_M, Q8_0, Q4_0 (llama.cpp's file types 15, 17, 7, 2).

Needs gguf and numpy, and llama-cpp-python for the quantizer (it compiles llama.cpp: slow):

    python3 -m venv target/shape-venv
    target/shape-venv/bin/pip install gguf==0.19.0 numpy==2.4.6
    CMAKE_ARGS=-DGGML_NATIVE=ON nice -n 19 target/shape-venv/bin/pip install llama-cpp-python==0.3.36
    target/shape-venv/bin/python scripts/make-shape-models.py [--shapes llama-3.2-1b] [--types Q4_K_M,Q8_0]

(scripts/compare-llamacpp.sh's target/llamacpp-venv has llama-cpp-python already: add gguf and
numpy to it and pass its python instead.) --no-quantize writes the f16 sources only. Then e.g.

    scripts/compare-llamacpp.sh --model target/shape-models/llama-3.2-1b.Q4_K_M.gguf
    scripts/compare-server.sh --model target/shape-models/llama-3.2-1b.Q4_K_M.gguf
"""

import argparse
import ctypes
import os
import sys

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "target", "shape-models")
SEED = 15

SHAPES = {
    "llama-3.2-1b": dict(hidden=2048, ffn=8192, layers=16, heads=32, kv_heads=8, tied=True),
    "llama-3.1-8b": dict(hidden=4096, ffn=14336, layers=32, heads=32, kv_heads=8, tied=False),
}
# llama.cpp's llama_ftype values.
FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17}
CONTEXT = 8192
ROPE_THETA = 500000.0


def copy_tokenizer(writer, path):
    """Every tokenizer.* key of the GGUF at `path`, with its type."""
    reader = gguf.GGUFReader(path)
    vocab = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        writer.add_key_value(key, value, main, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    if vocab is None:
        sys.exit(f"{path} has no tokenizer.ggml.tokens")
    return vocab


def tensor_shapes(s, vocab):
    """(name, numpy shape) of every tensor, in file order; numpy shape is (rows, columns)."""
    hd = s["hidden"] // s["heads"]
    out = [("token_embd.weight", (vocab, s["hidden"]))]
    for i in range(s["layers"]):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (s["hidden"],)),
            (b + "attn_q.weight", (s["heads"] * hd, s["hidden"])),
            (b + "attn_k.weight", (s["kv_heads"] * hd, s["hidden"])),
            (b + "attn_v.weight", (s["kv_heads"] * hd, s["hidden"])),
            (b + "attn_output.weight", (s["hidden"], s["heads"] * hd)),
            (b + "ffn_norm.weight", (s["hidden"],)),
            (b + "ffn_gate.weight", (s["ffn"], s["hidden"])),
            (b + "ffn_up.weight", (s["ffn"], s["hidden"])),
            (b + "ffn_down.weight", (s["hidden"], s["ffn"])),
        ]
    out.append(("output_norm.weight", (s["hidden"],)))
    if not s["tied"]:
        out.append(("output.weight", (vocab, s["hidden"])))
    return out


def tensor_data(rng, name, shape):
    """Norms are ones (f32); matrices are N(0, 0.02) in f16."""
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)


def write_source(name, s, path):
    """Streams the f16 source to `path`, one tensor in memory at a time."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"random {name} shape")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(s["hidden"])
    w.add_feed_forward_length(s["ffn"])
    w.add_block_count(s["layers"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(s["hidden"] // s["heads"])
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(1)  # mostly f16
    vocab = copy_tokenizer(w, TEST_MODEL)
    w.add_vocab_size(vocab)
    shapes = tensor_shapes(s, vocab)
    for tname, shape in shapes:
        dtype = np.float32 if len(shape) == 1 else np.float16
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        w.add_tensor_info(tname, shape, np.dtype(dtype), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(SEED)
    for tname, shape in shapes:
        w.write_tensor_data(tensor_data(rng, tname, shape))
    w.close()


def quantize(src, dst, ftype, threads):
    import llama_cpp  # only here: --no-quantize works without it

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize({src} -> {dst}) returned {rc}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    p.add_argument("--types", default=",".join(FTYPES), help="comma-separated: " + ", ".join(FTYPES))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--no-quantize", action="store_true")
    p.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = p.parse_args()
    shapes = [x for x in args.shapes.split(",") if x]
    types = [x for x in args.types.split(",") if x]
    bad = [x for x in shapes if x not in SHAPES] + [x for x in types if x not in FTYPES]
    if bad:
        sys.exit(f"unknown shape or type: {', '.join(bad)}")
    if not os.path.exists(TEST_MODEL):
        sys.exit(f"{TEST_MODEL} is missing: run scripts/fetch-test-model.sh")
    os.makedirs(OUT, exist_ok=True)
    for name in shapes:
        src = os.path.join(OUT, f"{name}.f16.gguf")
        if args.force or not os.path.exists(src):
            print(f"writing {src}", flush=True)
            write_source(name, SHAPES[name], src + ".part")
            os.replace(src + ".part", src)
        if args.no_quantize:
            continue
        for t in types:
            dst = os.path.join(OUT, f"{name}.{t}.gguf")
            if args.force or not os.path.exists(dst):
                print(f"quantizing {dst}", flush=True)
                quantize(src, dst + ".part", FTYPES[t], args.threads)
                os.replace(dst + ".part", dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
