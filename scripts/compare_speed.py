"""Runs `wick speed --json` and `llamacpp_speed.py` alternately, round after round, and prints
a Markdown table of the median tok/s of each side and their ratio, with each side's peak RSS.

Alternating rounds keep slow drifts of a shared machine from landing on one side only. Called by
`scripts/compare-llamacpp.sh`, which builds wick and the llama.cpp venv first.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(cmd):
    """Runs `cmd`, returns (rows, peak RSS in MiB) from its JSON lines and os.wait4."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with {proc.returncode}")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows, usage.ru_maxrss / 1024


def label(r):
    if r["test"] == "batched_decode":
        return f"batched decode {r['sequences']} x {r['tokens']}"
    return f"{r['test']} {r['tokens']}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wick", required=True, help="the wick binary")
    ap.add_argument("--python", required=True, help="python of the llama-cpp-python venv")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    a = ap.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    common = ["--model", a.model, "--repetitions", str(a.repetitions)]
    wick_cmd = [a.wick, "speed", "--json", *common]
    llama_cmd = [a.python, os.path.join(here, "llamacpp_speed.py"), "--threads", str(a.threads), *common]
    os.environ["WICK_THREADS"] = str(a.threads)

    results = {"wick": {}, "llama.cpp": {}}
    rss = {"wick": [], "llama.cpp": []}
    order = []
    for i in range(a.rounds):
        for side, cmd in (("wick", wick_cmd), ("llama.cpp", llama_cmd)):
            rows, peak = run(cmd)
            rss[side].append(peak)
            for r in rows:
                key = label(r)
                if key not in order:
                    order.append(key)
                results[side].setdefault(key, []).append(r["tokens_per_s"])
            print(f"round {i + 1}: {side} done", file=sys.stderr, flush=True)

    print(f"threads: {a.threads}, rounds: {a.rounds}, model: {os.path.basename(a.model)}")
    print()
    print("| test | wick tok/s | llama.cpp tok/s | wick / llama.cpp |")
    print("|---|---|---|---|")
    for key in order:
        w = statistics.median(results["wick"].get(key, [float("nan")]))
        l = statistics.median(results["llama.cpp"].get(key, [float("nan")]))
        print(f"| {key} | {w:.1f} | {l:.1f} | {w / l:.2f}x |")
    print(
        f"| peak RSS (MiB) | {max(rss['wick']):.0f} | {max(rss['llama.cpp']):.0f} | "
        f"{max(rss['wick']) / max(rss['llama.cpp']):.2f}x |"
    )


if __name__ == "__main__":
    main()
