//! The subcommands, one file each: its clap `Args` (built from the shared groups in
//! [`crate::config`]) and its body. [`crate::cli`] parses and dispatches here; nothing here
//! knows about the `Cli` type.
//!
//! Every body runs on the main thread: `run`, `perplexity` and `speed` run the model inline,
//! `bench` starts the engine (its worker thread) and client threads, `serve` builds a tokio
//! runtime, `usage` reads the server's database, and `pull` / `list` / `rm` talk to the hub
//! and its cache.

pub mod bench;
pub mod perplexity;
pub mod probe;
pub mod pull;
pub mod run;
pub mod serve;
pub mod speed;
pub mod usage;

use std::path::PathBuf;

use crate::config::ModelArgs;
use crate::model::generate::GenerateError;
use crate::model::perplexity::PerplexityError;
use crate::model::{device, LoadError, LoadedModel, ModelError};
use crate::sampling::SamplingError;
use crate::tokenizer::{PromptError, TokenizerError};

/// Why `wick run`, `perplexity`, `bench`, `speed`, `usage`, `pull`, `list` or `rm` failed
/// (`serve` has its own
/// [`serve::ServeError`]).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A flag's value is out of range, or the flags contradict each other or the model.
    #[error("{0}")]
    InvalidArgs(String),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the model has no chat template; use --raw to send the prompt as plain text")]
    NoChatTemplate,
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Perplexity(#[from] PerplexityError),
    #[error("forward failed: {0}")]
    Forward(#[from] ModelError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `wick pull`, `list` or `rm` against the hub or its cache (boxed: its messages carry
    /// several strings).
    #[error(transparent)]
    Hub(Box<crate::hub::HubError>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<crate::hub::HubError> for CommandError {
    fn from(e: crate::hub::HubError) -> Self {
        CommandError::Hub(Box::new(e))
    }
}

/// Loads the model `args` name onto its device, logging how long it took.
fn load(args: &ModelArgs) -> Result<LoadedModel, CommandError> {
    let dev = device::parse(&args.device)?;
    let t = std::time::Instant::now();
    let loaded = crate::model::load(&args.model, &dev)?;
    tracing::info!(
        model = %loaded.name,
        device = %args.device,
        secs = format!("{:.2}", t.elapsed().as_secs_f64()),
        "model loaded"
    );
    Ok(loaded)
}
