//! The hub's HTTP API as `wick pull` uses it: the revision listing
//! (`GET /api/models/{repo}/revision/main`), a file's metadata (`HEAD
//! /{repo}/resolve/{commit}/{file}`: `x-linked-etag` / `etag`, `x-linked-size` /
//! `content-length`) and its bytes (`GET` of the same URL, with `Range` to resume).

use std::time::Duration;

use serde::Deserialize;

use super::HubError;

/// A connection to one hub: its endpoint, the token sent as a bearer, two ureq agents.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    /// Follows no redirect: the hub's `x-linked-*` headers are on the redirect itself.
    meta: ureq::Agent,
    /// Follows redirects to the storage backend (without the token, which stays on the hub).
    data: ureq::Agent,
}

/// A repository revision: the commit it names and its file names.
#[derive(Debug)]
pub struct Listing {
    /// The full commit hash.
    pub commit: String,
    /// Every file of the commit, paths relative to the repository root.
    pub files: Vec<String>,
}

/// One file as the hub describes it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The path in the repository.
    pub name: String,
    /// `/{repo}/resolve/{commit}/{name}` on the hub.
    pub url: String,
    /// The blob name: the sha256 of an LFS file, the git blob sha1 of a small one.
    pub etag: String,
    /// Its size in bytes, when the hub says.
    pub size: Option<u64>,
}

impl Remote {
    /// The sha256 the bytes must hash to, when the etag is one (LFS files).
    pub fn sha256(&self) -> Option<&str> {
        let e = self.etag.as_str();
        (e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit())).then_some(e)
    }
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

impl Hub {
    /// A client for `endpoint` (no trailing slash), sending `token` when there is one.
    pub fn new(endpoint: String, token: Option<String>) -> Self {
        let agent = |redirects| {
            ureq::AgentBuilder::new()
                .redirects(redirects)
                .timeout_connect(Duration::from_secs(30))
                .timeout_read(Duration::from_secs(120))
                .user_agent(concat!("wick/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Self {
            endpoint,
            token,
            meta: agent(0),
            data: agent(10),
        }
    }

    /// The hub's base URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn authed(&self, req: ureq::Request) -> ureq::Request {
        // The hub may gzip what it is not told to leave alone, and then content-length is no
        // longer the file's size.
        let req = req.set("Accept-Encoding", "identity");
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// Maps a ureq failure on `url` (about `what`) to a one-line error.
    pub(crate) fn error(&self, what: &str, url: &str, err: ureq::Error) -> HubError {
        match err {
            ureq::Error::Status(status @ (401 | 403), _) => {
                let what = what.to_string();
                if self.token.is_some() {
                    HubError::Denied { what, status }
                } else {
                    HubError::NeedsToken { what, status }
                }
            }
            ureq::Error::Status(404, _) => HubError::NotFound {
                what: what.to_string(),
                endpoint: self.endpoint.clone(),
            },
            ureq::Error::Status(status, _) => HubError::Status {
                url: url.to_string(),
                status,
            },
            ureq::Error::Transport(t) => HubError::Network {
                endpoint: self.endpoint.clone(),
                detail: t.to_string(),
            },
        }
    }

    /// Lists the `main` revision of `repo`: its commit and file names.
    pub fn listing(&self, repo: &str) -> Result<Listing, HubError> {
        let url = format!("{}/api/models/{repo}/revision/main", self.endpoint);
        let resp = self
            .authed(self.meta.get(&url))
            .call()
            .map_err(|e| self.error(repo, &url, e))?;
        let protocol = |detail: String| HubError::Protocol {
            url: url.clone(),
            detail,
        };
        let info: RevisionInfo = resp.into_json().map_err(|e| protocol(e.to_string()))?;
        let commit = info
            .sha
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| protocol("no commit hash (sha) in the listing".into()))?;
        Ok(Listing {
            commit,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// The metadata of `name` at `commit`, from a `HEAD` that follows no redirect.
    pub fn file_meta(&self, repo: &str, commit: &str, name: &str) -> Result<Remote, HubError> {
        let url = format!("{}/{repo}/resolve/{commit}/{name}", self.endpoint);
        let what = format!("{repo}:{name}");
        let resp = self
            .authed(self.meta.head(&url))
            .call()
            .map_err(|e| self.error(&what, &url, e))?;
        let header = |h: &str| resp.header(h).map(str::trim).filter(|v| !v.is_empty());
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\', '.']))
            .ok_or_else(|| HubError::Protocol {
                url: url.clone(),
                detail: "no etag header".into(),
            })?;
        let size = header("x-linked-size")
            .or_else(|| {
                (resp.status() < 300)
                    .then(|| header("content-length"))
                    .flatten()
            })
            .and_then(|s| s.parse().ok());
        Ok(Remote {
            name: name.to_string(),
            url,
            etag,
            size,
        })
    }

    /// Starts the `GET` of `remote`'s bytes from byte `from` (a `Range` request when > 0).
    pub fn get(&self, remote: &Remote, from: u64) -> Result<ureq::Response, HubError> {
        let mut req = self.authed(self.data.get(&remote.url));
        if from > 0 {
            req = req.set("Range", &format!("bytes={from}-"));
        }
        match req.call() {
            Ok(r) => Ok(r),
            // The partial file is as long as (or longer than) the file: the caller restarts.
            Err(ureq::Error::Status(416, r)) => Ok(r),
            Err(e) => Err(self.error(&remote.name, &remote.url, e)),
        }
    }
}
