//! `wick pull`, `wick list` and `wick rm`, the real binary against a hub stand-in on 127.0.0.1
//! (`HF_ENDPOINT`) and a cache in a tempdir (`HF_HOME`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::hub_standin::{sha256_hex, File, Repo, Seen, StandIn, TOKEN};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn wick(hub: &StandIn, home: &Path, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wick"));
    cmd.args(args)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("WICK_MODEL");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    let out = cmd.output().expect("wick runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "wick panicked:\n{stderr}");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// Deterministic bytes that are not all alike.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn hf_repo() -> Repo {
    Repo {
        id: "org/tiny-hf".into(),
        commit: COMMIT.into(),
        files: vec![
            File::small("config.json", br#"{"model_type":"llama"}"#),
            File::small("tokenizer.json", br#"{"version":"1.0"}"#),
            File::lfs("model.safetensors", bytes(300_000, 7)),
            File::small("README.md", b"# not needed to load"),
        ],
        gated: false,
    }
}

fn repo_dir(home: &Path, repo: &str) -> PathBuf {
    home.join("hub")
        .join(format!("models--{}", repo.replace('/', "--")))
}

fn body_gets(seen: &[Seen]) -> Vec<Seen> {
    seen.iter()
        .filter(|s| s.method == "GET" && !s.path.starts_with("/api/"))
        .cloned()
        .collect()
}

#[test]
fn pull_fetches_what_the_loader_needs_then_list_and_rm_see_it() {
    let repo = hf_repo();
    let weights = repo.files[2].body.clone();
    let hub = StandIn::start(vec![repo], None);
    let home = tempfile::tempdir().expect("tempdir");
    let out = wick(&hub, home.path(), None, &["pull", "org/tiny-hf"]);
    assert!(out.ok, "{}", out.stderr);

    let dir = repo_dir(home.path(), "org/tiny-hf");
    let snap = dir.join("snapshots").join(COMMIT);
    assert_eq!(out.stdout.trim(), snap.display().to_string());
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).expect("ref"),
        COMMIT
    );
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).expect("weights"),
        weights
    );
    let sha = sha256_hex(&weights);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("blobs").join(&sha)).expect("blob")),
        sha
    );
    assert!(std::fs::symlink_metadata(snap.join("model.safetensors"))
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(snap.join("config.json").exists() && snap.join("tokenizer.json").exists());
    assert!(!snap.join("README.md").exists(), "README.md is not needed");
    assert!(
        !hub.seen().iter().any(|s| s.path.ends_with("README.md")),
        "README.md was requested"
    );

    let list = wick(&hub, home.path(), None, &["list"]);
    assert!(list.ok, "{}", list.stderr);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with("org/tiny-hf"))
        .unwrap_or_else(|| panic!("no row for the repo:\n{}", list.stdout));
    assert!(row.contains(&COMMIT[..12]), "{row}");
    assert!(
        row.contains("model.safetensors") && row.contains("config.json"),
        "{row}"
    );
    assert!(row.contains("293.") && row.contains("KiB"), "{row}");

    // Second pull: everything is there and verified, no body is downloaded again.
    hub.clear();
    let again = wick(&hub, home.path(), None, &["pull", "org/tiny-hf"]);
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("model.safetensors: already in the cache"),
        "{}",
        again.stderr
    );
    assert_eq!(body_gets(&hub.seen()).len(), 0, "{:?}", hub.seen());

    let rm = wick(&hub, home.path(), None, &["rm", "org/tiny-hf"]);
    assert!(
        rm.ok && rm.stdout.contains("removed org/tiny-hf"),
        "{}{}",
        rm.stdout,
        rm.stderr
    );
    assert!(!dir.exists());
    let list = wick(&hub, home.path(), None, &["list"]);
    assert!(list.stdout.contains("no models in"), "{}", list.stdout);
    let rm = wick(&hub, home.path(), None, &["rm", "org/tiny-hf"]);
    assert!(!rm.ok);
    assert!(
        rm.stderr.contains("org/tiny-hf is not in the hub cache"),
        "{}",
        rm.stderr
    );
}

#[test]
fn a_broken_download_resumes_with_a_range_request() {
    let body = bytes(200_000, 3);
    let repo = Repo {
        id: "org/gguf".into(),
        commit: COMMIT.into(),
        files: vec![
            File::lfs("m.Q4_0.gguf", body.clone()),
            File::lfs("m.Q8_0.gguf", bytes(1000, 1)),
        ],
        gated: false,
    };
    let hub = StandIn::start(vec![repo], Some(("m.Q4_0.gguf", 70_000)));
    let home = tempfile::tempdir().expect("tempdir");
    let id = "org/gguf:m.Q4_0.gguf";
    let first = wick(&hub, home.path(), None, &["pull", id]);
    assert!(!first.ok);
    assert!(
        first
            .stderr
            .contains("m.Q4_0.gguf: download interrupted after 70000 of 200000 bytes"),
        "{}",
        first.stderr
    );
    let dir = repo_dir(home.path(), "org/gguf");
    let part = dir
        .join("blobs")
        .join(format!("{}.incomplete", sha256_hex(&body)));
    assert_eq!(
        std::fs::metadata(&part).expect("partial kept").len(),
        70_000
    );
    assert!(!dir.join("refs/main").exists());

    hub.clear();
    let second = wick(&hub, home.path(), None, &["pull", id]);
    assert!(second.ok, "{}", second.stderr);
    assert!(
        second.stderr.contains("resumed at byte 70000"),
        "{}",
        second.stderr
    );
    let gets = body_gets(&hub.seen());
    // The hub redirects to its storage, which answers the range.
    let storage: Vec<_> = gets
        .iter()
        .filter(|s| s.path.starts_with("/storage/"))
        .map(|s| s.range.as_deref())
        .collect();
    assert_eq!(storage, [Some("bytes=70000-")], "{gets:?}");
    let file = dir.join("snapshots").join(COMMIT).join("m.Q4_0.gguf");
    assert_eq!(second.stdout.trim(), file.display().to_string());
    assert_eq!(std::fs::read(&file).expect("file"), body);
    assert!(!part.exists());
    // Only the named file was fetched.
    assert!(!dir
        .join("snapshots")
        .join(COMMIT)
        .join("m.Q8_0.gguf")
        .exists());
}

#[test]
fn a_corrupted_file_is_refused_and_deleted() {
    let mut file = File::lfs("model.gguf", bytes(50_000, 9));
    file.body[12_345] ^= 0xff;
    let advertised = file.lfs_sha256.clone().expect("lfs");
    let repo = Repo {
        id: "org/bad".into(),
        commit: COMMIT.into(),
        files: vec![file],
        gated: false,
    };
    let hub = StandIn::start(vec![repo], None);
    let home = tempfile::tempdir().expect("tempdir");
    let out = wick(&hub, home.path(), None, &["pull", "org/bad"]);
    assert!(!out.ok);
    let msg = out.stderr.trim();
    assert!(
        msg.contains("model.gguf: sha256")
            && msg.contains(&advertised)
            && msg.contains("the download was deleted"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    let dir = repo_dir(home.path(), "org/bad");
    let left: Vec<_> = std::fs::read_dir(dir.join("blobs"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "blobs left: {left:?}");
    assert!(!dir
        .join("snapshots")
        .join(COMMIT)
        .join("model.gguf")
        .exists());
    assert!(!dir.join("refs/main").exists());
}

#[test]
fn a_gated_repo_needs_hf_token_which_stays_on_the_hub() {
    let mut repo = hf_repo();
    repo.id = "org/gated".into();
    repo.gated = true;
    let hub = StandIn::start(vec![repo], None);
    let home = tempfile::tempdir().expect("tempdir");
    let out = wick(&hub, home.path(), None, &["pull", "org/gated"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("HTTP 401") && out.stderr.contains("set HF_TOKEN"),
        "{}",
        out.stderr
    );

    let out = wick(&hub, home.path(), Some("hf_wrong"), &["pull", "org/gated"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("HTTP 403") && out.stderr.contains("accept its terms"),
        "{}",
        out.stderr
    );

    hub.clear();
    let out = wick(&hub, home.path(), Some(TOKEN), &["pull", "org/gated"]);
    assert!(out.ok, "{}", out.stderr);
    let seen = hub.seen();
    let bearer = format!("Bearer {TOKEN}");
    assert!(seen
        .iter()
        .filter(|s| s.path.contains("/resolve/"))
        .all(|s| s.auth.as_deref() == Some(bearer.as_str())));
    let storage: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/storage/"))
        .collect();
    assert!(
        !storage.is_empty() && storage.iter().all(|s| s.auth.is_none()),
        "{storage:?}"
    );
}

#[test]
fn missing_repos_and_files_are_one_line_errors() {
    let hub = StandIn::start(vec![hf_repo()], None);
    let home = tempfile::tempdir().expect("tempdir");
    let out = wick(&hub, home.path(), None, &["pull", "org/nope"]);
    assert!(!out.ok);
    let want = format!("org/nope: not found on {} (HTTP 404)", hub.url);
    assert!(out.stderr.trim().ends_with(&want), "{}", out.stderr);
    let out = wick(&hub, home.path(), None, &["pull", "org/tiny-hf:nope.gguf"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("org/tiny-hf:nope.gguf: not found"),
        "{}",
        out.stderr
    );
    let out = wick(&hub, home.path(), None, &["pull", "not-an-id"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("not a hub id"), "{}", out.stderr);
    // Nothing answers here: a network error, not a panic.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["pull", "org/tiny-hf"])
        .env("HF_ENDPOINT", &url)
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("wick runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("cannot reach {url}")), "{stderr}");
}

#[test]
fn a_pulled_gguf_loads_with_its_hub_id() {
    let Some(model) = crate::common::model_path() else {
        return;
    };
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let repo = Repo {
        id: "org/smol".into(),
        commit: COMMIT.into(),
        files: vec![File::lfs(name, std::fs::read(&model).expect("model"))],
        gated: false,
    };
    let hub = StandIn::start(vec![repo], None);
    let home = tempfile::tempdir().expect("tempdir");
    let out = wick(&hub, home.path(), None, &["pull", "org/smol"]);
    assert!(out.ok, "{}", out.stderr);
    let run = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args([
            "run",
            "--model",
            "org/smol",
            "--max-tokens",
            "2",
            "--raw",
            "Hello",
        ])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .output()
        .expect("wick runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
