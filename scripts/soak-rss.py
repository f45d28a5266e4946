#!/usr/bin/env python3
"""Resident memory of `wick serve` over a soak of short requests.

Starts the built server (target/debug/wick unless --binary) on a free 127.0.0.1 port with the
test model and default engine flags, sends --requests completions (distinct ~100-token prompts,
--max-tokens generated, greedy) from --concurrency clients, and samples the server's VmRSS
(/proc/PID/status) after the first 50 requests, every --every requests and at the end. Prints
one line per sample and a summary with the ratio end / after-50 (the goal: at most 1.25).
Standard library only; Linux (it reads /proc).

    scripts/soak-rss.py [--binary target/release/wick] [--requests 2000] [--concurrency 8]
                        [--json out.json] [-- extra wick serve flags]
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
    "river stone lantern orbit velvet harbor meadow signal copper willow thunder pixel "
    "garden marble ember falcon canyon whisper glacier compass ribbon violet summit anchor "
    "prairie beacon crystal saddle timber hollow mosaic quartz nectar fable tundra cobalt "
    "jasmine orchard ripple spindle tavern walnut zephyr basalt cinder dune fjord grove"
).split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def prompt(i, words):
    """A distinct prompt of `words` words (~1.3 tokens each), so no two share a cached prefix
    beyond the first words."""
    rng = random.Random(i)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Note {i}: {body}. Continue the note:"


def post(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def wait_ready(port, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not get ready")


class Soak:
    def __init__(self, args, port, pid):
        self.args, self.port, self.pid = args, port, pid
        self.lock = threading.Lock()
        self.next = 0
        self.done = 0
        self.tokens = 0
        self.samples = []
        self.errors = []
        self.t0 = time.time()

    def sample(self, label):
        row = {"after": label, "rss_mib": round(rss_kib(self.pid) / 1024, 1),
               "seconds": round(time.time() - self.t0, 1), "completion_tokens": self.tokens}
        self.samples.append(row)
        print(json.dumps(row), flush=True)

    def client(self):
        a = self.args
        while True:
            with self.lock:
                if self.next >= a.requests or self.errors:
                    return
                i = self.next
                self.next += 1
            body = {"prompt": prompt(i, a.prompt_words),
                    "max_tokens": a.max_tokens, "temperature": 0}
            try:
                out = post(self.port, body)
            except Exception as e:  # noqa: BLE001 - reported, stops the soak
                with self.lock:
                    self.errors.append(f"request {i}: {e}")
                return
            with self.lock:
                self.done += 1
                self.tokens += out.get("usage", {}).get("completion_tokens", 0)
                n = self.done
                if n == 50 or (n % a.every == 0) or n == a.requests:
                    self.sample(n)

    def run(self):
        self.sample(0)
        threads = [threading.Thread(target=self.client) for _ in range(self.args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(ROOT, "target/debug/wick"))
    p.add_argument("--model", default=os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--prompt-words", type=int, default=75, help="~100 prompt tokens")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--json", help="write the samples and summary here")
    p.add_argument("serve_args", nargs="*", help="extra `wick serve` flags (after --)")
    args = p.parse_args()

    port = free_port()
    cmd = [args.binary, "serve", "--model", args.model, "--host", "127.0.0.1",
           "--port", str(port), *args.serve_args]
    log = open(os.path.join(ROOT, "target/soak-rss-server.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        soak = Soak(args, port, proc.pid)
        soak.run()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if soak.errors:
        print("\n".join(soak.errors), file=sys.stderr)
        return 1
    at50 = next((s for s in soak.samples if s["after"] == 50), None)
    end = soak.samples[-1]
    summary = {"binary": args.binary, "requests": soak.done, "concurrency": args.concurrency,
               "rss_after_50_mib": at50 and at50["rss_mib"], "rss_end_mib": end["rss_mib"],
               "ratio": at50 and round(end["rss_mib"] / at50["rss_mib"], 3)}
    print(json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": soak.samples, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
