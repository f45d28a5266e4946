//! Model ids `org/name[:file]` resolved through the Hugging Face hub cache.
//!
//! Offline (`HF_HUB_OFFLINE=1`) the id is looked up in the local cache only
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`); online the files are
//! downloaded into that cache with a progress bar. Runs at start-up on the loading thread.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo};

use super::LoadError;

/// A parsed `org/name[:file]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpec {
    /// `org/name`.
    pub repo: String,
    /// The file after `:`, when one is named.
    pub file: Option<String>,
}

impl HubSpec {
    /// Parses `org/name` or `org/name:file.gguf`. Anything else is not a hub id.
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, file) = match spec.split_once(':') {
            Some((r, f)) if !f.is_empty() => (r, Some(f.to_string())),
            Some(_) => return None,
            None => (spec, None),
        };
        let mut parts = repo.split('/');
        let (org, name) = (parts.next()?, parts.next()?);
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if parts.next().is_some() || !ok(org) || !ok(name) {
            return None;
        }
        Some(Self {
            repo: repo.to_string(),
            file,
        })
    }
}

/// The cache that `HF_HUB_CACHE` / `HF_HOME` name, or the default one.
pub fn default_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) if !p.is_empty() => Cache::new(PathBuf::from(p)),
        _ => Cache::from_env(),
    }
}

/// True when `HF_HUB_OFFLINE` is set to a true value.
pub fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes") | Ok("ON") | Ok("on")
    )
}

/// Resolves a hub id to a local GGUF file or a snapshot directory.
pub fn resolve(spec: &HubSpec, cache: &Cache, offline: bool) -> Result<PathBuf, LoadError> {
    if offline {
        resolve_cached(spec, cache)
    } else {
        resolve_online(spec, cache)
    }
}

fn snapshot_dir(spec: &HubSpec, cache: &Cache) -> Result<PathBuf, LoadError> {
    let repo_dir = cache
        .path()
        .join(Repo::model(spec.repo.clone()).folder_name());
    let ref_path = repo_dir.join("refs").join("main");
    let commit = std::fs::read_to_string(&ref_path).map_err(|_| LoadError::NotInCache {
        repo: spec.repo.clone(),
        detail: format!("no {} in the hub cache", ref_path.display()),
    })?;
    let dir = repo_dir.join("snapshots").join(commit.trim());
    if !dir.is_dir() {
        return Err(LoadError::NotInCache {
            repo: spec.repo.clone(),
            detail: format!("snapshot {} is missing", dir.display()),
        });
    }
    Ok(dir)
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Picks what to load from a repo's file list: a named file, a HF directory, or its one GGUF.
fn choose(spec: &HubSpec, files: &[String]) -> Result<Choice, LoadError> {
    if let Some(f) = &spec.file {
        return Ok(Choice::File(f.clone()));
    }
    if files.iter().any(|f| f == "config.json") {
        return Ok(Choice::Dir);
    }
    let ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    match ggufs.as_slice() {
        [one] => Ok(Choice::File((*one).clone())),
        [] => Err(LoadError::NotAModel {
            path: PathBuf::from(&spec.repo),
            detail: "the repository has neither config.json nor a .gguf file".into(),
        }),
        many => Err(LoadError::NotAModel {
            path: PathBuf::from(&spec.repo),
            detail: format!(
                "the repository has several .gguf files; name one as {}:<file> ({})",
                spec.repo,
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

enum Choice {
    File(String),
    Dir,
}

/// True for the files of a Hugging Face model directory that loading it needs.
fn is_dir_file(f: &str) -> bool {
    f.ends_with(".safetensors")
        || matches!(
            f,
            "config.json"
                | "tokenizer.json"
                | "tokenizer_config.json"
                | "generation_config.json"
                | "model.safetensors.index.json"
        )
}

/// The files of a repository (listed as `files`) that loading `spec` needs: the named file, the
/// repository's one GGUF, or a model directory's weights, config and tokenizer. `wick pull`
/// fetches exactly these, so `--model` finds them in the cache afterwards.
pub fn files_to_fetch(spec: &HubSpec, files: &[String]) -> Result<Vec<String>, LoadError> {
    Ok(match choose(spec, files)? {
        Choice::File(f) => vec![f],
        Choice::Dir => files.iter().filter(|f| is_dir_file(f)).cloned().collect(),
    })
}

fn resolve_cached(spec: &HubSpec, cache: &Cache) -> Result<PathBuf, LoadError> {
    let dir = snapshot_dir(spec, cache)?;
    match choose(spec, &list_files(&dir))? {
        Choice::Dir => Ok(dir),
        Choice::File(f) => {
            let p = dir.join(&f);
            if p.exists() {
                Ok(p)
            } else {
                Err(LoadError::NotInCache {
                    repo: spec.repo.clone(),
                    detail: format!("{f} is not in the cached snapshot {}", dir.display()),
                })
            }
        }
    }
}

fn resolve_online(spec: &HubSpec, cache: &Cache) -> Result<PathBuf, LoadError> {
    let hub_err = |e: hf_hub::api::sync::ApiError| LoadError::Hub {
        repo: spec.repo.clone(),
        detail: e.to_string(),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(hub_err)?;
    let repo = api.model(spec.repo.clone());
    let info = repo.info().map_err(hub_err)?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    match choose(spec, &files)? {
        Choice::File(f) => repo.get(&f).map_err(hub_err),
        Choice::Dir => {
            let wanted = files.iter().filter(|f| is_dir_file(f));
            let mut config = None;
            for f in wanted {
                let p = repo.get(f).map_err(hub_err)?;
                if f == "config.json" {
                    config = Some(p);
                }
            }
            config
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .ok_or_else(|| LoadError::Hub {
                    repo: spec.repo.clone(),
                    detail: "config.json did not download".into(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_ids() {
        assert_eq!(
            HubSpec::parse("HuggingFaceTB/SmolLM2-135M-Instruct"),
            Some(HubSpec {
                repo: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                file: None
            })
        );
        assert_eq!(
            HubSpec::parse("org/name:model.Q4_1.gguf").and_then(|s| s.file),
            Some("model.Q4_1.gguf".into())
        );
        for bad in ["name", "a/b/c", "/abs", "org/", "org/name:", "./x/y z"] {
            assert_eq!(HubSpec::parse(bad), None, "{bad}");
        }
    }

    fn fake_snapshot(root: &Path, repo: &str, files: &[&str]) -> PathBuf {
        let repo_dir = root.join(format!("models--{}", repo.replace('/', "--")));
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "abc123").unwrap();
        let snap = repo_dir.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        for f in files {
            std::fs::write(snap.join(f), b"x").unwrap();
        }
        snap
    }

    #[test]
    fn offline_resolution_reads_the_cache_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().to_path_buf());
        let snap = fake_snapshot(tmp.path(), "org/gguf-model", &["m.Q4_1.gguf", "README.md"]);
        let spec = HubSpec::parse("org/gguf-model").unwrap();
        assert_eq!(
            resolve(&spec, &cache, true).unwrap(),
            snap.join("m.Q4_1.gguf")
        );

        let snap = fake_snapshot(
            tmp.path(),
            "org/hf-model",
            &["config.json", "model.safetensors"],
        );
        let spec = HubSpec::parse("org/hf-model").unwrap();
        assert_eq!(resolve(&spec, &cache, true).unwrap(), snap);

        fake_snapshot(tmp.path(), "org/two", &["a.gguf", "b.gguf"]);
        let err = resolve(&HubSpec::parse("org/two").unwrap(), &cache, true).unwrap_err();
        assert!(err.to_string().contains("org/two:<file>"), "{err}");
        let picked = resolve(&HubSpec::parse("org/two:b.gguf").unwrap(), &cache, true).unwrap();
        assert!(picked.ends_with("b.gguf"));

        let err = resolve(&HubSpec::parse("org/missing").unwrap(), &cache, true).unwrap_err();
        assert!(matches!(err, LoadError::NotInCache { .. }), "{err}");
        let err = resolve(&HubSpec::parse("org/two:c.gguf").unwrap(), &cache, true).unwrap_err();
        assert!(err.to_string().contains("c.gguf"), "{err}");
    }
}
