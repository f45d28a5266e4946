//! The Hugging Face hub client behind `wick pull`, `wick list` and `wick rm`: it downloads a
//! repository's files into the hub cache (the layout huggingface_hub writes, so `--model
//! org/name` and Python tools find them), resumes broken downloads, verifies sizes and sha256
//! hashes, and reads and prunes that cache.
//!
//! Runs on the main thread of those commands, blocking (ureq); the server never calls it.
//! It never leaves an unverified file where a loader would read it: bytes land in
//! `blobs/<etag>.incomplete` and are renamed to `blobs/<etag>` only once checked.

pub mod cache;
mod client;
mod download;

use std::path::{Path, PathBuf};

pub use client::Hub;

use crate::model::hub::{files_to_fetch, HubSpec};
use crate::model::LoadError;

/// The hub `HF_ENDPOINT` names, else huggingface.co.
pub fn endpoint() -> String {
    match std::env::var("HF_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => e.trim().trim_end_matches('/').to_string(),
        _ => "https://huggingface.co".to_string(),
    }
}

/// The access token: `HF_TOKEN`, else the `token` file beside the cache (what `hf auth login`
/// writes).
pub fn token(cache: &hf_hub::Cache) -> Option<String> {
    match std::env::var("HF_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => cache.token(),
    }
}

/// Why a hub command failed. Each message is one line that names the repository or file.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// 404: the repository, revision or file does not exist on that hub.
    #[error("{what}: not found on {endpoint} (HTTP 404)")]
    NotFound { what: String, endpoint: String },
    /// 401 / 403 with no token sent.
    #[error(
        "{what}: access denied (HTTP {status}); the repository is gated or private: set HF_TOKEN \
         to a token that can read it"
    )]
    NeedsToken { what: String, status: u16 },
    /// 401 / 403 although a token was sent.
    #[error(
        "{what}: access denied (HTTP {status}) with the token from HF_TOKEN; for a gated model, \
         accept its terms on the hub with that account"
    )]
    Denied { what: String, status: u16 },
    /// Any other HTTP error status.
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// DNS, connect, TLS or a connection dropped before the response.
    #[error("cannot reach {endpoint}: {detail}")]
    Network { endpoint: String, detail: String },
    /// The body stopped early; the partial file stays for the next pull to resume.
    #[error(
        "{file}: download interrupted after {got} of {size} bytes ({detail}); run wick pull \
         again to resume"
    )]
    Interrupted {
        file: String,
        got: u64,
        size: String,
        detail: String,
    },
    /// The bytes' sha256 is not the one the hub advertises; the download was deleted.
    #[error("{file}: sha256 {got} does not match the hub's {expected}; the download was deleted")]
    HashMismatch {
        file: String,
        got: String,
        expected: String,
    },
    /// More or fewer bytes than the hub advertises; the download was deleted.
    #[error("{file}: got {got} bytes, the hub says {expected}; the download was deleted")]
    SizeMismatch {
        file: String,
        got: u64,
        expected: u64,
    },
    /// The hub answered something this client does not understand.
    #[error("{url}: unexpected answer from the hub: {detail}")]
    Protocol { url: String, detail: String },
    /// The disk filled up while writing.
    #[error("disk full writing {}", path.display())]
    DiskFull { path: PathBuf },
    /// Any other file-system error.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `wick rm` of a repository the cache does not hold.
    #[error("{repo} is not in the hub cache ({})", dir.display())]
    NotCached { repo: String, dir: PathBuf },
    /// Not an `org/name[:file]` id, or the repository holds nothing loadable.
    #[error("{0}")]
    Spec(String),
    /// Picking the files to fetch failed (no model in the repository, several GGUFs).
    #[error(transparent)]
    Model(#[from] LoadError),
}

impl HubError {
    /// An I/O error on `path`, with a full disk called by its name.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull {
            HubError::DiskFull {
                path: path.to_path_buf(),
            }
        } else {
            HubError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// What happened to one file of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The verified blob was already in the cache; nothing was downloaded.
    UpToDate,
    /// Downloaded (`resumed_from` bytes were already on disk) and verified.
    Downloaded { bytes: u64, resumed_from: u64 },
}

/// The outcome of [`pull`]: the commit and each file with what happened to it.
#[derive(Debug)]
pub struct Pulled {
    /// The commit `refs/main` now names.
    pub commit: String,
    /// The snapshot directory: `--model` loads from here.
    pub snapshot: PathBuf,
    /// Each file, in the order pulled.
    pub files: Vec<(String, Fetched)>,
}

/// Downloads what loading `spec` needs into the cache at `root`: lists the repository's
/// `main`, picks the files as the loader would, fetches each into `blobs/` (resuming and
/// verifying), links it under `snapshots/<commit>/` and then points `refs/main` at the commit.
pub fn pull(hub: &Hub, spec: &HubSpec, root: &Path) -> Result<Pulled, HubError> {
    let listing = hub.listing(&spec.repo)?;
    if let Some(f) = &spec.file {
        if !listing.files.iter().any(|l| l == f) {
            return Err(HubError::NotFound {
                what: format!("{}:{f}", spec.repo),
                endpoint: hub.endpoint().to_string(),
            });
        }
    }
    let wanted = files_to_fetch(spec, &listing.files)?;
    let layout = cache::RepoLayout::new(root, &spec.repo);
    let snapshot = layout.snapshot(&listing.commit);
    let mut files = Vec::new();
    for name in wanted {
        let remote = hub.file_meta(&spec.repo, &listing.commit, &name)?;
        let blob = layout.blob(&remote.etag);
        let fetched = download::fetch(hub, &remote, &blob)?;
        layout.link(&listing.commit, &name, &remote.etag)?;
        files.push((name, fetched));
    }
    layout.set_ref("main", &listing.commit)?;
    Ok(Pulled {
        commit: listing.commit,
        snapshot,
        files,
    })
}
