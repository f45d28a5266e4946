"""Fixtures for the end-to-end suite: the built `wick` binary serving the real test model on
127.0.0.1, driven by the official `openai` client.

The binary is `$WICK_BIN`, else `$CARGO_TARGET_DIR/debug/wick`, else `target/debug/wick` (what
`cargo test` builds for the integration tests). The model is `$WICK_TEST_MODEL`, else
`models/SmolLM2-135M-Instruct.Q4_1.gguf`. Each server gets a free port, is waited on through
`/health`, and is stopped at the end: SIGTERM, wait, SIGKILL past a timeout. Its data directory
(`--data-dir`, the usage database) is `data/` in its log directory unless the test gives one.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = "smol"


def wick_bin() -> pathlib.Path:
    if os.environ.get("WICK_BIN"):
        return pathlib.Path(os.environ["WICK_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "wick"


def model_path() -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("WICK_TEST_MODEL") or ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: pathlib.Path

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=kw.pop("api_key", "unused"),
            max_retries=kw.pop("max_retries", 0),
            timeout=kw.pop("timeout", 300),
            **kw,
        )

    def raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        """A plain HTTP request (for what the openai client will not send): status, JSON."""
        req = urllib.request.Request(
            f"{self.url}{path}", data=body, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _json(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None


def start_server(log_dir: pathlib.Path, *args: str, rust_log: str | None = None) -> Server:
    binary, model = wick_bin(), model_path()
    if not binary.exists():
        pytest.fail(f"wick binary missing at {binary}: build it (cargo test builds it) or set WICK_BIN")
    if not model.exists():
        pytest.fail(f"test model missing at {model}: run scripts/fetch-test-model.sh")
    port = free_port()
    log = log_dir / f"wick-{port}.log"
    env = dict(os.environ, RUST_LOG=rust_log or os.environ.get("RUST_LOG", "wick=warn"))
    data = [] if "--data-dir" in args else ["--data-dir", str(log_dir / "data")]
    cmd = [
        str(binary), "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", MODEL, "--kv-cache-memory", "256MiB", *data, *args,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"wick exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"wick did not become ready:\n{log.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("wick"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def small_server(tmp_path_factory):
    """One running sequence, one queue place, a 64 KiB body limit: for 413, 429 and slots."""
    s = start_server(
        tmp_path_factory.mktemp("wick-small"),
        "--max-running", "1", "--max-queue", "1", "--max-body-bytes", "65536",
    )
    yield s
    s.stop()


API_KEY = "sk-wick-e2e"


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory):
    """A server that needs the key `API_KEY` (`--api-key`)."""
    s = start_server(tmp_path_factory.mktemp("wick-keyed"), "--api-key", API_KEY)
    yield s
    s.stop()


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of its own (for draining it)."""
    s = start_server(tmp_path_factory.mktemp("wick-fresh"), "--drain-grace-secs", "60")
    yield s
    s.stop()
