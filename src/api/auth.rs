//! API keys: [`ApiKeys`] (the configured keys, as SHA-256 digests), [`AuthConfig`] (the keys and
//! which paths are public) and [`require_key`], the middleware that answers 401 before a
//! handler reads the body. Built once at start (from `--api-key`, `WICK_API_KEYS` and
//! `--api-keys-file`); the middleware runs on the HTTP tasks.
//!
//! A key is never stored, compared or logged in the clear: the presented key is hashed and its
//! digest compared with each configured digest in constant time (`subtle`); logs name a key by
//! its `name` (from the file) or `sha256:` and the first 8 hex digits of its digest.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::limits::KeyLimits;

/// A key's SHA-256.
type KeyDigest = [u8; 32];

/// One configured key.
#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    digest: KeyDigest,
    admin: bool,
    limits: KeyLimits,
}

/// The key a request was let in with, put into its extensions (absent when no key is
/// configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyName {
    /// The key's `name` from the keys file, or `sha256:` + 8 hex digits for a `--api-key`.
    pub name: Arc<str>,
    pub admin: bool,
}

/// The configured keys. Empty means the server is open.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for ApiKeys {
    /// Names only: never a key or a full digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

/// The keys file: `[[keys]]` tables of `name`, `key` or `sha256`, `admin`, and the limits
/// `requests_per_minute`, `tokens_per_minute`, `max_concurrent_requests` (each optional, > 0).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<FileEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    key: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    admin: bool,
    requests_per_minute: Option<NonZeroU32>,
    tokens_per_minute: Option<NonZeroU32>,
    max_concurrent_requests: Option<NonZeroU32>,
}

impl ApiKeys {
    /// Keys given on the command line (`--api-key`, `WICK_API_KEYS`), named by their digest.
    pub fn from_plain<S: AsRef<str>>(keys: &[S]) -> Result<Self, String> {
        let mut out = Self::default();
        for (i, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            if key.trim().is_empty() {
                return Err(format!(
                    "--api-key / WICK_API_KEYS #{}: the key is empty",
                    i + 1
                ));
            }
            let digest = digest(key);
            out.push(Entry {
                name: short_name(&digest).into(),
                digest,
                admin: false,
                limits: KeyLimits::default(),
            })
            .map_err(|e| format!("--api-key / WICK_API_KEYS #{}: {e}", i + 1))?;
        }
        Ok(out)
    }

    /// Reads a keys file (TOML). Errors are one line naming the file and the entry or field.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("api keys file {shown}: reading it: {e}"))?;
        Self::from_toml(&text).map_err(|e| format!("api keys file {shown}: {e}"))
    }

    /// Parses the keys file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!("line {}: ", 1 + text[..s.start].matches('\n').count()))
                .unwrap_or_default();
            format!("{line}{}", e.message().trim())
        })?;
        let mut out = Self::default();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let at = format!("keys[{i}] (name {:?})", entry.name);
            let e = file_entry(entry).map_err(|e| format!("{at}: {e}"))?;
            out.push(e).map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(out)
    }

    /// Adds the keys of `other` (the command line's and the file's together).
    pub fn extend(&mut self, other: ApiKeys) -> Result<(), String> {
        for e in other.entries {
            let name = e.name.clone();
            self.push(e).map_err(|m| format!("key {name:?}: {m}"))?;
        }
        Ok(())
    }

    fn push(&mut self, entry: Entry) -> Result<(), String> {
        if self.entries.iter().any(|e| e.name == entry.name) {
            return Err(format!("the name {:?} is used twice", entry.name));
        }
        if self.find_digest(&entry.digest).is_some() {
            return Err("the same key is configured twice".into());
        }
        self.entries.push(entry);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Each key's name and limits.
    pub fn limits(&self) -> impl Iterator<Item = (Arc<str>, KeyLimits)> + '_ {
        self.entries.iter().map(|e| (e.name.clone(), e.limits))
    }

    /// Sets the limits of the key named `name` (tests use a short window); false if none.
    pub fn set_limits(&mut self, name: &str, limits: KeyLimits) -> bool {
        let found = self.entries.iter_mut().find(|e| &*e.name == name);
        found.map(|e| e.limits = limits).is_some()
    }

    /// The keys' names, for the start-up log.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| &*e.name).collect()
    }

    /// The key `presented` matches, compared in constant time against every configured digest.
    pub fn check(&self, presented: &str) -> Option<ApiKeyName> {
        self.find_digest(&digest(presented)).map(|e| ApiKeyName {
            name: e.name.clone(),
            admin: e.admin,
        })
    }

    /// Every entry is compared (no early exit), each comparison in constant time.
    fn find_digest(&self, d: &KeyDigest) -> Option<&Entry> {
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(d)) && found.is_none() {
                found = Some(e);
            }
        }
        found
    }
}

fn file_entry(entry: FileEntry) -> Result<Entry, String> {
    if entry.name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    let digest = match (entry.key, entry.sha256) {
        (Some(_), Some(_)) => return Err("give either `key` or `sha256`, not both".into()),
        (None, None) => return Err("no `key` and no `sha256`".into()),
        (Some(k), None) if k.trim().is_empty() => return Err("`key` is empty".into()),
        (Some(k), None) => digest(&k),
        (None, Some(h)) => parse_hex_digest(&h)?,
    };
    Ok(Entry {
        name: entry.name.into(),
        digest,
        admin: entry.admin,
        limits: KeyLimits {
            requests_per_minute: entry.requests_per_minute,
            tokens_per_minute: entry.tokens_per_minute,
            max_concurrent_requests: entry.max_concurrent_requests,
            ..KeyLimits::default()
        },
    })
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:` and the first 8 hex digits of the digest: a name that says nothing of the key.
fn short_name(d: &KeyDigest) -> String {
    let hex: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn parse_hex_digest(h: &str) -> Result<KeyDigest, String> {
    let h = h.trim();
    let bad = || format!("`sha256` must be 64 hex digits, got {} characters", h.len());
    if h.len() != 64 || !h.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The keys and the paths that stay public.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub keys: ApiKeys,
    /// `/metrics` needs a key too (`--metrics-require-key`); otherwise it is public.
    pub metrics_require_key: bool,
}

impl AuthConfig {
    /// No key: every route is open.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// `/health*` and the web page's files (`/`, `/ui*`: the page asks for a key and sends it
    /// with every API call) always; `/metrics` unless `metrics_require_key`.
    pub fn is_public(&self, path: &str) -> bool {
        path == "/health"
            || path.starts_with("/health/")
            || super::ui::is_ui_path(path)
            || (path == "/metrics" && !self.metrics_require_key)
    }
}

/// Why a request was refused; the message never repeats the key.
const NO_KEY: &str = "You didn't provide an API key. Send it as `Authorization: Bearer KEY` \
                      or `x-api-key: KEY`.";
const NOT_BEARER: &str = "the Authorization header must be `Bearer KEY`";
const NOT_TEXT: &str = "the API key header is not visible ASCII";
const WRONG_KEY: &str = "Incorrect API key provided.";

/// The keys a request presents, from `Authorization: Bearer KEY`, `x-api-key: KEY` and a
/// WebSocket handshake's `Sec-WebSocket-Protocol: wick-key.KEY`; or, when none carries one,
/// why not.
pub fn presented_keys(headers: &HeaderMap) -> Result<Vec<&str>, &'static str> {
    let mut keys = Vec::new();
    let mut fault = None;
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        match v.to_str() {
            Err(_) => fault = Some(NOT_TEXT),
            Ok(s) => match bearer(s) {
                Some(k) => keys.push(k),
                None => fault = Some(NOT_BEARER),
            },
        }
    }
    if let Some(v) = headers.get("x-api-key") {
        match v.to_str().map(str::trim) {
            Ok(k) if !k.is_empty() => keys.push(k),
            Ok(_) => fault = fault.or(Some(NO_KEY)),
            Err(_) => fault = fault.or(Some(NOT_TEXT)),
        }
    }
    // A browser cannot set headers on a WebSocket handshake: the web page offers the key as
    // the subprotocol `wick-key.KEY` beside `wick` (the one the server selects).
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(s) = v.to_str() else { continue };
        keys.extend(
            s.split(',')
                .filter_map(|p| p.trim().strip_prefix(WS_KEY_PREFIX))
                .filter(|k| !k.is_empty()),
        );
    }
    if keys.is_empty() {
        return Err(fault.unwrap_or(NO_KEY));
    }
    Ok(keys)
}

/// The prefix of the WebSocket subprotocol that carries a key (`wick-key.KEY`).
pub const WS_KEY_PREFIX: &str = "wick-key.";

/// The token of `Bearer TOKEN` (the scheme is case-insensitive), if non-empty.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware: public paths and an open server pass; otherwise one of the presented keys
/// must match, or the request gets 401 before its body is read. The key's name goes into the
/// request's extensions as [`ApiKeyName`].
pub async fn require_key(
    State(auth): State<Arc<AuthConfig>>,
    mut req: Request,
    next: Next,
) -> Response {
    if auth.is_open() || auth.is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let key = match presented_keys(req.headers()) {
        Ok(keys) => keys.into_iter().find_map(|k| auth.keys.check(k)),
        Err(why) => return ApiError::Unauthorized(why.into()).into_response(),
    };
    match key {
        Some(key) => {
            req.extensions_mut().insert(key.clone());
            let mut resp = next.run(req).await;
            // For the access log, which runs outside this middleware.
            resp.extensions_mut().insert(key);
            resp
        }
        None => {
            tracing::debug!(path = %req.uri().path(), "refused: wrong API key");
            ApiError::Unauthorized(WRONG_KEY.into()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hex(d: &KeyDigest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_key_matches_only_itself() {
        let keys = ApiKeys::from_plain(&["sk-one", "sk-two"]).unwrap();
        assert_eq!(keys.len(), 2);
        let one = keys.check("sk-one").unwrap();
        assert!(one.name.starts_with("sha256:") && one.name.len() == 15);
        assert!(!one.admin);
        assert_ne!(keys.check("sk-two").unwrap().name, one.name);
        for wrong in ["sk-on", "sk-one ", "", "SK-ONE", "sk-one\0"] {
            assert_eq!(keys.check(wrong), None, "{wrong:?}");
        }
        assert_eq!(ApiKeys::default().check("sk-one"), None);
    }

    #[test]
    fn the_check_hashes_and_compares_digests() {
        // sha256("abc"), the FIPS 180-2 example.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex(&digest("abc")), abc);
        let keys = ApiKeys::from_toml(&format!(
            "[[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nadmin = true\n",
            abc.to_uppercase()
        ))
        .unwrap();
        let k = keys.check("abc").unwrap();
        assert_eq!((&*k.name, k.admin), ("ops", true));
        assert_eq!(keys.check("abd"), None);
        // The debug form names keys, never digests.
        assert_eq!(format!("{keys:?}"), "[\"ops\"]");
    }

    #[test]
    fn each_key_of_the_file_carries_its_limits() {
        let keys = ApiKeys::from_toml(
            "[[keys]]\nname = \"a\"\nkey = \"ka\"\nrequests_per_minute = 60\n\
             tokens_per_minute = 90000\nmax_concurrent_requests = 4\n\
             [[keys]]\nname = \"b\"\nkey = \"kb\"\n",
        )
        .unwrap();
        let limits: Vec<_> = keys.limits().collect();
        let a = limits[0].1;
        assert_eq!(&*limits[0].0, "a");
        assert_eq!(
            (
                a.requests_per_minute.map(|n| n.get()),
                a.tokens_per_minute.map(|n| n.get()),
                a.max_concurrent_requests.map(|n| n.get()),
                a.window,
            ),
            (
                Some(60),
                Some(90000),
                Some(4),
                std::time::Duration::from_secs(60)
            )
        );
        assert!(limits[1].1.is_unlimited());
    }

    #[test]
    fn bad_keys_are_refused_at_start() {
        assert!(ApiKeys::from_plain(&["a", " "]).unwrap_err().contains("#2"));
        assert!(ApiKeys::from_plain(&["a", "a"])
            .unwrap_err()
            .contains("twice"));
        let cases = [
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\nrpm = 5\n",
                "unknown field `rpm`",
            ),
            ("[[keys]]\nname = \"a\"\nkey = \"k\"\nrpm = 5\n", "line 4"),
            ("limits = 1\n", "unknown field `limits`"),
            ("[[keys]]\nname = \"a\"\n", "keys[0] (name \"a\"): no `key`"),
            ("[[keys]]\nname = \"a\"\nkey = \"\"\n", "`key` is empty"),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\nsha256 = \"00\"\n",
                "not both",
            ),
            ("[[keys]]\nname = \"a\"\nsha256 = \"00\"\n", "64 hex digits"),
            (
                &format!("[[keys]]\nname = \"a\"\nsha256 = \"{}\"\n", "g".repeat(64)),
                "64 hex digits",
            ),
            ("[[keys]]\nkey = \"k\"\n", "missing field `name`"),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\n[[keys]]\nname = \"a\"\nkey = \"j\"\n",
                "keys[1] (name \"a\"): the name \"a\" is used twice",
            ),
            ("[[keys]\n", "line 1"),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\ntokens_per_minute = 0\n",
                "line 4",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\nmax_concurrent_requests = -1\n",
                "line 4",
            ),
        ];
        for (text, want) in cases {
            let e = ApiKeys::from_toml(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn the_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.toml");
        std::fs::write(&p, "[[keys]]\nname = \"a\"\nkey = \"k\"\ntpm = 1\n").unwrap();
        let e = ApiKeys::from_file(&p).unwrap_err();
        assert!(e.contains("keys.toml") && e.contains("`tpm`"), "{e}");
        assert!(ApiKeys::from_file(&dir.path().join("none.toml"))
            .unwrap_err()
            .contains("none.toml"));
    }

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn headers_parse() {
        let ok = |pairs: &[(&'static str, &[u8])]| {
            presented_keys(&headers(pairs))
                .unwrap()
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(ok(&[("authorization", b"Bearer sk-1")]), ["sk-1"]);
        assert_eq!(ok(&[("authorization", b"bearer  sk-1 ")]), ["sk-1"]);
        assert_eq!(ok(&[("x-api-key", b"sk-2")]), ["sk-2"]);
        assert_eq!(
            ok(&[("authorization", b"Bearer a"), ("x-api-key", b"b")]),
            ["a", "b"]
        );
        // The web page's WebSocket handshake: the key is a subprotocol; `wick` alone is none.
        assert_eq!(
            ok(&[("sec-websocket-protocol", b"wick, wick-key.sk-3")]),
            ["sk-3"]
        );
        // A malformed Authorization does not hide a good x-api-key.
        assert_eq!(
            ok(&[("authorization", b"sk-1"), ("x-api-key", b"b")]),
            ["b"]
        );
        let err = |pairs: &[(&'static str, &[u8])]| presented_keys(&headers(pairs)).unwrap_err();
        assert_eq!(err(&[]), NO_KEY);
        assert_eq!(
            err(&[("sec-websocket-protocol", b"wick, wick-key.")]),
            NO_KEY
        );
        assert_eq!(err(&[("authorization", b"sk-1")]), NOT_BEARER);
        assert_eq!(err(&[("authorization", b"Basic dXNlcjpwYXNz")]), NOT_BEARER);
        assert_eq!(err(&[("authorization", b"Bearer ")]), NOT_BEARER);
        assert_eq!(err(&[("authorization", b"Bearer")]), NOT_BEARER);
        assert_eq!(err(&[("authorization", b"Bearer sk-\xff")]), NOT_TEXT);
        assert_eq!(err(&[("x-api-key", b"")]), NO_KEY);
        assert_eq!(err(&[("x-api-key", b"\xfe")]), NOT_TEXT);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_key_name_and_admin_flag_reach_the_handler() {
        use axum::routing::get;
        use axum::Extension;
        let keys = ApiKeys::from_toml(
            "[[keys]]\nname = \"ops\"\nkey = \"sk-ops\"\nadmin = true\n\n\
             [[keys]]\nname = \"team\"\nkey = \"sk-team\"\n",
        )
        .unwrap();
        let auth = Arc::new(AuthConfig {
            keys,
            metrics_require_key: true,
        });
        let app = axum::Router::new()
            .route(
                "/who",
                get(|Extension(k): Extension<ApiKeyName>| async move {
                    format!("{} {}", k.name, k.admin)
                }),
            )
            .route("/metrics", get(|| async { "m" }))
            .layer(axum::middleware::from_fn_with_state(auth, require_key));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let c = reqwest::Client::new();
        let who = |key: &'static str| c.get(format!("{url}/who")).bearer_auth(key).send();
        assert_eq!(
            who("sk-ops").await.unwrap().text().await.unwrap(),
            "ops true"
        );
        assert_eq!(
            who("sk-team").await.unwrap().text().await.unwrap(),
            "team false"
        );
        assert_eq!(who("sk-nope").await.unwrap().status().as_u16(), 401);
        // --metrics-require-key: /metrics needs a key like any other route.
        let m = c.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(m.status().as_u16(), 401);
        let m = c
            .get(format!("{url}/metrics"))
            .header("x-api-key", "sk-team");
        assert_eq!(m.send().await.unwrap().text().await.unwrap(), "m");
        server.abort();
    }

    #[test]
    fn health_is_public_and_metrics_by_flag() {
        let mut auth = AuthConfig {
            keys: ApiKeys::from_plain(&["k"]).unwrap(),
            metrics_require_key: false,
        };
        // The web page is public (its API calls carry the key the user typed).
        for p in [
            "/health",
            "/health/live",
            "/health/ready",
            "/metrics",
            "/",
            "/ui",
        ] {
            assert!(auth.is_public(p), "{p}");
        }
        for p in ["/v1/models", "/healthz", "/metrics/x", "/tokenize", "/uix"] {
            assert!(!auth.is_public(p), "{p}");
        }
        auth.metrics_require_key = true;
        assert!(!auth.is_public("/metrics"));
        assert!(auth.is_public("/health/live"));
    }
}
