//! A stand-in for the Hugging Face hub on 127.0.0.1, for `wick pull`: the revision listing
//! (`/api/models/{repo}/revision/main`), `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with the
//! hub's headers (`x-repo-commit`, `etag`; LFS files answer 302 with `x-linked-etag` /
//! `x-linked-size` and a `Location` on a storage path, as the hub does), `Range` requests, and
//! the faults the tests need: a gated repository, a body cut after N bytes, corrupted bytes.
//! Plain std threads; every response closes its connection. The server stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// The token the gated repositories accept.
pub const TOKEN: &str = "hf_standin_token";

/// One file of a repository.
#[derive(Clone)]
pub struct File {
    pub name: String,
    /// What the server sends.
    pub body: Vec<u8>,
    /// What it advertises: `Some(sha256)` for an LFS file; `None` for a small git file.
    pub lfs_sha256: Option<String>,
}

impl File {
    /// An LFS file whose advertised sha256 is the body's own.
    pub fn lfs(name: &str, body: Vec<u8>) -> Self {
        let sha = sha256_hex(&body);
        Self {
            name: name.into(),
            body,
            lfs_sha256: Some(sha),
        }
    }

    /// A small (non-LFS) file: the etag is a git-blob-like sha1 the client cannot check.
    pub fn small(name: &str, body: &[u8]) -> Self {
        Self {
            name: name.into(),
            body: body.to_vec(),
            lfs_sha256: None,
        }
    }

    fn etag(&self) -> String {
        self.lfs_sha256
            .clone()
            .unwrap_or_else(|| sha256_hex(&self.body)[..40].to_string())
    }
}

/// One repository.
#[derive(Clone)]
pub struct Repo {
    pub id: String,
    pub commit: String,
    pub files: Vec<File>,
    /// Answer 401 on `resolve` without `Bearer TOKEN` (403 with another token).
    pub gated: bool,
}

/// A request the stand-in saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

struct State {
    repos: Vec<Repo>,
    /// Cut the first body of this file after this many bytes.
    cut: Mutex<Option<(String, usize)>>,
    seen: Mutex<Vec<Seen>>,
}

/// The running stand-in.
pub struct StandIn {
    pub url: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl StandIn {
    /// Serves `repos`; `cut` = (file name, n) cuts that file's first body after n bytes.
    pub fn start(repos: Vec<Repo>, cut: Option<(&str, usize)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            repos,
            cut: Mutex::new(cut.map(|(f, n)| (f.to_string(), n))),
            seen: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(&st, conn);
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
            stop,
            addr,
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.state.seen.lock().expect("seen").clear();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn handle(st: &State, conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    st.seen.lock().expect("seen").push(seen.clone());
    respond(st, &seen, conn)
}

fn send(
    mut conn: TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| *k == "content-length") {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes())?;
    if !head {
        conn.write_all(body)?;
    }
    conn.flush()
}

fn respond(st: &State, req: &Seen, conn: TcpStream) -> std::io::Result<()> {
    let not_found = |conn| {
        send(
            conn,
            "404 Not Found",
            &[("x-error-code", "EntryNotFound".into())],
            b"{\"error\":\"not found\"}",
            false,
        )
    };
    let path = req.path.as_str();
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some(repo) = rest
            .strip_suffix("/revision/main")
            .and_then(|id| st.repos.iter().find(|r| r.id == id))
        else {
            return not_found(conn);
        };
        let siblings: Vec<_> = repo
            .files
            .iter()
            .map(|f| serde_json::json!({"rfilename": f.name}))
            .collect();
        let body = serde_json::json!({"id": repo.id, "sha": repo.commit, "siblings": siblings})
            .to_string();
        return send(
            conn,
            "200 OK",
            &[("content-type", "application/json".into())],
            body.as_bytes(),
            false,
        );
    }
    if let Some(rest) = path.strip_prefix("/storage/") {
        // The storage backend: bytes by etag, with Range; no token needed.
        let Some(file) = st
            .repos
            .iter()
            .flat_map(|r| &r.files)
            .find(|f| f.etag() == rest)
        else {
            return not_found(conn);
        };
        return send_body(st, req, conn, file);
    }
    let Some(repo) = st
        .repos
        .iter()
        .find(|r| path.starts_with(&format!("/{}/resolve/", r.id)))
    else {
        return not_found(conn);
    };
    if repo.gated && req.auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let status = if req.auth.is_some() {
            "403 Forbidden"
        } else {
            "401 Unauthorized"
        };
        return send(
            conn,
            status,
            &[("x-error-code", "GatedRepo".into())],
            b"{\"error\":\"gated\"}",
            false,
        );
    }
    let rest = &path[format!("/{}/resolve/", repo.id).len()..];
    let (rev, name) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(file) = repo
        .files
        .iter()
        .find(|f| f.name == name)
        .filter(|_| rev == "main" || rev == repo.commit)
    else {
        return not_found(conn);
    };
    let head = req.method == "HEAD";
    let mut headers = vec![("x-repo-commit", repo.commit.clone())];
    if file.lfs_sha256.is_some() {
        headers.extend([
            ("x-linked-etag", format!("\"{}\"", file.etag())),
            ("x-linked-size", file.body.len().to_string()),
            ("location", format!("/storage/{}", file.etag())),
            ("etag", "\"pointer-etag\"".to_string()),
        ]);
        return send(conn, "302 Found", &headers, b"", head);
    }
    headers.push(("etag", format!("\"{}\"", file.etag())));
    if head {
        headers.push(("content-length", file.body.len().to_string()));
        return send(conn, "200 OK", &headers, b"", true);
    }
    send_body(st, req, conn, file)
}

fn send_body(st: &State, req: &Seen, conn: TcpStream, file: &File) -> std::io::Result<()> {
    let len = file.body.len();
    let from = req
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let cut = {
        let mut c = st.cut.lock().expect("cut");
        match c.as_ref() {
            Some((name, n)) if *name == file.name => {
                let n = *n;
                *c = None;
                Some(n)
            }
            _ => None,
        }
    };
    if let Some(n) = cut {
        // Promise the whole file, send n bytes, hang up.
        let mut conn = conn;
        let head = format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n");
        conn.write_all(head.as_bytes())?;
        conn.write_all(&file.body[..n])?;
        conn.flush()?;
        return conn.shutdown(std::net::Shutdown::Both);
    }
    match from {
        Some(f) if f >= len => send(
            conn,
            "416 Range Not Satisfiable",
            &[("content-range", format!("bytes */{len}"))],
            b"",
            false,
        ),
        Some(f) => send(
            conn,
            "206 Partial Content",
            &[("content-range", format!("bytes {f}-{}/{len}", len - 1))],
            &file.body[f..],
            false,
        ),
        None => send(conn, "200 OK", &[], &file.body, false),
    }
}
