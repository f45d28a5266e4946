//! The hub cache on disk, as huggingface_hub lays it out:
//! `<root>/models--ORG--NAME/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>,
//! refs/main}`. Writing one repository's entries, listing what the cache holds, removing a
//! repository.

use std::path::{Path, PathBuf};

use super::HubError;

/// The paths of one repository in the cache.
pub struct RepoLayout {
    dir: PathBuf,
}

impl RepoLayout {
    /// The layout of `repo` (`org/name`) under the cache `root`.
    pub fn new(root: &Path, repo: &str) -> Self {
        Self {
            dir: root.join(folder_name(repo)),
        }
    }

    /// `models--ORG--NAME`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The content-addressed file for `etag`.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// The directory of the files at `commit`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// Points `snapshots/<commit>/<name>` at the blob `etag` (a relative symlink, as
    /// huggingface_hub makes it; a copy where there are no symlinks).
    pub fn link(&self, commit: &str, name: &str, etag: &str) -> Result<(), HubError> {
        let link = self.snapshot(commit).join(name);
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        }
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).map_err(|e| HubError::io(&link, e))?;
        }
        let depth = name.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(&target, &link);
        #[cfg(not(unix))]
        let made = std::fs::copy(self.blob(etag), &link).map(|_| ());
        made.map_err(|e| HubError::io(&link, e))
    }

    /// Writes `refs/<name>` = `commit`.
    pub fn set_ref(&self, name: &str, commit: &str) -> Result<(), HubError> {
        let path = self.dir.join("refs").join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        }
        std::fs::write(&path, commit).map_err(|e| HubError::io(&path, e))
    }
}

/// `org/name` -> `models--org--name`.
pub fn folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// One repository the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRepo {
    /// `org/name`.
    pub repo: String,
    /// The commit `refs/main` names, if any.
    pub revision: Option<String>,
    /// The files of that snapshot with their sizes, sorted.
    pub files: Vec<(String, u64)>,
    /// Bytes on disk: every blob of the repository, partial downloads included.
    pub size: u64,
}

/// Every model repository under the cache `root`, sorted by name. A missing root is empty.
pub fn scan(root: &Path) -> Result<Vec<CachedRepo>, HubError> {
    let entries = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HubError::io(root, e)),
    };
    let mut repos = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        if entry.path().is_dir() {
            repos.push(read_repo(&entry.path(), rest.replacen("--", "/", 1)));
        }
    }
    repos.sort_by(|a, b| a.repo.cmp(&b.repo));
    Ok(repos)
}

fn read_repo(dir: &Path, repo: String) -> CachedRepo {
    let revision = std::fs::read_to_string(dir.join("refs/main"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let mut files = Vec::new();
    if let Some(rev) = &revision {
        walk(&dir.join("snapshots").join(rev), "", &mut files);
    }
    files.sort();
    let mut blobs = Vec::new();
    walk(&dir.join("blobs"), "", &mut blobs);
    CachedRepo {
        repo,
        revision,
        files,
        size: blobs.iter().map(|(_, s)| s).sum(),
    }
}

/// Collects the files under `dir` (following links) as (relative path, size).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let rel = format!("{prefix}{name}");
        match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_dir() => walk(&entry.path(), &format!("{rel}/"), out),
            Ok(m) => out.push((rel, m.len())),
            Err(_) => {}
        }
    }
}

/// Removes `repo` with its blobs from the cache `root`; returns what it held.
pub fn remove(root: &Path, repo: &str) -> Result<CachedRepo, HubError> {
    let dir = root.join(folder_name(repo));
    if !dir.is_dir() {
        return Err(HubError::NotCached {
            repo: repo.to_string(),
            dir,
        });
    }
    let held = read_repo(&dir, repo.to_string());
    std::fs::remove_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
    Ok(held)
}

/// `1234567` -> `1.2 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_links_and_scan_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let l = RepoLayout::new(tmp.path(), "org/m");
        std::fs::create_dir_all(l.blob("e1").parent().unwrap()).unwrap();
        std::fs::write(l.blob("e1"), b"hello").unwrap();
        std::fs::write(l.blob("e2"), b"abc").unwrap();
        l.link("c0", "config.json", "e1").unwrap();
        l.link("c0", "sub/w.bin", "e2").unwrap();
        l.set_ref("main", "c0").unwrap();
        assert_eq!(
            std::fs::read(l.snapshot("c0").join("sub/w.bin")).unwrap(),
            b"abc"
        );
        let repos = scan(tmp.path()).unwrap();
        assert_eq!(
            repos,
            vec![CachedRepo {
                repo: "org/m".into(),
                revision: Some("c0".into()),
                files: vec![("config.json".into(), 5), ("sub/w.bin".into(), 3)],
                size: 8,
            }]
        );
        assert_eq!(remove(tmp.path(), "org/m").unwrap().size, 8);
        assert!(scan(tmp.path()).unwrap().is_empty());
        let err = remove(tmp.path(), "org/m").unwrap_err();
        assert!(
            err.to_string().contains("org/m is not in the hub cache"),
            "{err}"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(98_362_432), "93.8 MiB");
    }
}
