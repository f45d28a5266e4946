"""Usage statistics of the built binary: requests made with the official `openai` client land
in `wick.db` under `--data-dir`; `wick usage` prints them while the server runs and after it
stopped (SIGTERM flushes what is queued); `GET /v1/usage` needs an admin key (the client
raises `PermissionDeniedError` for another key)."""

from __future__ import annotations

import json
import subprocess
import time

import openai
import pytest

from conftest import MODEL, start_server, wick_bin

ADMIN, USER = "sk-usage-admin", "sk-usage-user"


def wick_usage(data_dir, *args: str) -> str:
    out = subprocess.run(
        [str(wick_bin()), "usage", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def usage_json(data_dir, *args: str) -> dict:
    return json.loads(wick_usage(data_dir, "--json", *args))


def wait_requests(data_dir, n: int, timeout: float = 30) -> dict:
    """`wick usage --json` once it counts `n` requests (the writer batches every 250 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        v = usage_json(data_dir)
        total = sum(d["requests"] for d in v["data"])
        if total == n:
            return v
        assert total < n and time.monotonic() < deadline, v
        time.sleep(0.1)


@pytest.fixture(scope="module")
def usage_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("wick-usage")
    keys = root / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "admin"\nkey = "{ADMIN}"\nadmin = true\n\n'
        f'[[keys]]\nname = "user"\nkey = "{USER}"\n'
    )
    data = root / "data"
    s = start_server(root, "--api-keys-file", str(keys), "--data-dir", str(data))
    yield s, data
    s.stop()


def test_wick_usage_prints_what_the_server_served(usage_server):
    server, data = usage_server
    user = server.client(api_key=USER)
    chat = user.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5, temperature=0
    )
    emb = user.embeddings.create(model=MODEL, input="hello there")
    comp = server.client(api_key=ADMIN).completions.create(
        model=MODEL, prompt="The sky is", max_tokens=3, temperature=0
    )
    user.models.list()  # not a model request: no row
    v = wait_requests(data, 3)
    by_key = {d["key"]: d for d in v["data"]}
    assert by_key["user"]["requests"] == 2
    assert by_key["user"]["prompt_tokens"] == chat.usage.prompt_tokens + emb.usage.prompt_tokens
    assert by_key["user"]["completion_tokens"] == chat.usage.completion_tokens
    assert by_key["admin"]["prompt_tokens"] == comp.usage.prompt_tokens
    assert by_key["admin"]["total_tokens"] == comp.usage.total_tokens

    table = wick_usage(data, "--group-by", "model").splitlines()
    assert table[0].split() == [
        "model", "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens",
    ]
    row = table[1].split()
    assert row[0] == MODEL and row[1] == "3", table


def test_v1_usage_is_for_the_admin_key(usage_server):
    server, _ = usage_server
    admin = server.client(api_key=ADMIN)
    r = admin.get("/usage", cast_to=object, options={"params": {"group_by": "model"}})
    assert r["object"] == "list" and r["group_by"] == "model"
    assert r["data"][0]["model"] == MODEL
    with pytest.raises(openai.PermissionDeniedError) as e:
        server.client(api_key=USER).get("/usage", cast_to=object)
    assert e.value.status_code == 403
    assert e.value.code == "insufficient_permissions"
    with pytest.raises(openai.BadRequestError) as e:
        admin.get("/usage", cast_to=object, options={"params": {"group_by": "week"}})
    assert e.value.param == "group_by"


def test_the_rows_queued_at_sigterm_are_written(tmp_path):
    data = tmp_path / "data"
    s = start_server(tmp_path, "--data-dir", str(data))
    try:
        client = s.client()
        for _ in range(2):
            client.completions.create(model=MODEL, prompt="One, two,", max_tokens=2)
    finally:
        s.stop()
    assert s.proc.returncode == 0
    v = usage_json(data, "--group-by", "day")
    assert sum(d["requests"] for d in v["data"]) == 2, v
