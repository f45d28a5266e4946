//! `wick pull`, `wick list` and `wick rm`: fetch a model into the Hugging Face cache, show what
//! the cache holds, remove one. The transfers, checks and cache layout live in [`crate::hub`];
//! these are the command bodies. Run on the main thread; no model is loaded.

use clap::Args;

use super::CommandError;
use crate::hub::cache::{self, human_size};
use crate::hub::{self, Fetched, Hub, HubError};
use crate::model::hub::{default_cache, offline, HubSpec};

/// `wick pull ORG/NAME[:FILE]`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The hub id to fetch, as `--model` takes it: `org/name` (a GGUF repository's one file, or
    /// a model directory's weights, config and tokenizer) or `org/name:file.gguf`.
    #[arg(env = "WICK_MODEL")]
    pub model: String,
}

/// `wick list`.
#[derive(Debug, Args)]
pub struct ListArgs {}

/// `wick rm ORG/NAME`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The repository to remove, `org/name`, with all its revisions and blobs.
    pub model: String,
}

fn parse(id: &str) -> Result<HubSpec, HubError> {
    HubSpec::parse(id).ok_or_else(|| {
        HubError::Spec(format!(
            "{id}: not a hub id; expected ORG/NAME or ORG/NAME:FILE"
        ))
    })
}

/// Downloads (or checks) the files and prints the path `--model` loads on stdout.
pub fn pull(args: &PullArgs) -> Result<(), CommandError> {
    let spec = parse(&args.model)?;
    if offline() {
        return Err(HubError::Spec("HF_HUB_OFFLINE is set; wick pull needs the hub".into()).into());
    }
    let cache = default_cache();
    let client = Hub::new(hub::endpoint(), hub::token(&cache));
    let pulled = hub::pull(&client, &spec, cache.path())?;
    for (name, fetched) in &pulled.files {
        match fetched {
            Fetched::UpToDate => eprintln!("{name}: already in the cache, verified"),
            Fetched::Downloaded {
                bytes,
                resumed_from: 0,
            } => eprintln!("{name}: downloaded {}", human_size(*bytes)),
            Fetched::Downloaded {
                bytes,
                resumed_from,
            } => eprintln!(
                "{name}: downloaded {} (resumed at byte {resumed_from})",
                human_size(*bytes)
            ),
        }
    }
    eprintln!("{} at {}", spec.repo, pulled.commit);
    let path = match (&spec.file, pulled.files.as_slice()) {
        (Some(f), _) => pulled.snapshot.join(f),
        (None, [(one, _)]) => pulled.snapshot.join(one),
        _ => pulled.snapshot,
    };
    println!("{}", path.display());
    Ok(())
}

/// Prints one line per cached model: repository, revision, size on disk, files.
pub fn list(_args: &ListArgs) -> Result<(), CommandError> {
    let cache = default_cache();
    let repos = cache::scan(cache.path())?;
    if repos.is_empty() {
        println!("no models in {}", cache.path().display());
        return Ok(());
    }
    let width = repos.iter().map(|r| r.repo.len()).max().unwrap_or(0).max(4);
    println!(
        "{:width$}  {:12}  {:>10}  FILES",
        "REPO", "REVISION", "SIZE"
    );
    for r in &repos {
        let rev = r.revision.as_deref().unwrap_or("-");
        let files: Vec<&str> = r.files.iter().map(|(f, _)| f.as_str()).collect();
        println!(
            "{:width$}  {:12}  {:>10}  {}",
            r.repo,
            &rev[..rev.len().min(12)],
            human_size(r.size),
            if files.is_empty() {
                "-".to_string()
            } else {
                files.join(", ")
            }
        );
    }
    Ok(())
}

/// Removes a repository from the cache; an error when the cache does not hold it.
pub fn rm(args: &RmArgs) -> Result<(), CommandError> {
    let spec = parse(&args.model)?;
    if spec.file.is_some() {
        return Err(HubError::Spec(format!(
            "{}: wick rm removes a whole repository; give ORG/NAME",
            args.model
        ))
        .into());
    }
    let cache = default_cache();
    let held = cache::remove(cache.path(), &spec.repo)?;
    println!("removed {} ({})", held.repo, human_size(held.size));
    Ok(())
}
