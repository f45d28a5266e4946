//! The command line: `Cli` (the global flags and the subcommand), its `Command`s and
//! `run`, which dispatches each to its body in [`crate::commands`]. Runs on the main thread.
//! Nothing below this module imports from it.

use clap::{Parser, Subcommand};

use crate::commands::bench::{self, BenchArgs};
use crate::commands::perplexity::{self, PerplexityArgs};
use crate::commands::pull::{self as pull_cmd, ListArgs, PullArgs, RmArgs};
use crate::commands::run::{self as run_cmd, RunArgs};
use crate::commands::serve::{self, ServeArgs, ServeError};
use crate::commands::speed::{self, SpeedArgs};
use crate::commands::usage::{self, UsageArgs};
use crate::commands::CommandError;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "wick",
    version,
    about = "Llama-family models behind an OpenAI-compatible API"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "WICK_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a reply to one prompt, streamed to the terminal.
    Run(RunArgs),
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity(PerplexityArgs),
    /// Load-test the engine in process: streamed greedy requests at several concurrency levels.
    Bench(BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(Box<ServeArgs>),
    /// Raw forward speed: prefill, decode and batched decode tok/s, as llama-bench measures.
    Speed(SpeedArgs),
    /// Usage totals per key, model or day, from the server's database (`--data-dir`).
    Usage(UsageArgs),
    /// Download a model into the Hugging Face cache (resumable, verified): `org/name[:file]`.
    Pull(PullArgs),
    /// Show the models the Hugging Face cache holds.
    List(ListArgs),
    /// Remove a model, with its files, from the Hugging Face cache.
    Rm(RmArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => run_cmd::run(&args)?,
        Command::Perplexity(args) => perplexity::run(&args)?,
        Command::Bench(args) => bench::run(&args)?,
        Command::Serve(args) => serve::run(&args)?,
        Command::Speed(args) => speed::run(&args)?,
        Command::Usage(args) => usage::run(&args)?,
        Command::Pull(args) => pull_cmd::pull(&args)?,
        Command::List(args) => pull_cmd::list(&args)?,
        Command::Rm(args) => pull_cmd::rm(&args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_flags_reach_the_shared_groups() {
        let cli = Cli::parse_from([
            "wick", "run", "-n", "4", "--top-p", "0.9", "--seed", "3", "hi",
        ]);
        let Command::Run(a) = cli.command else {
            panic!("expected run")
        };
        assert_eq!((a.prompt.as_str(), a.max_tokens), ("hi", 4));
        assert_eq!((a.sampling.top_p, a.sampling.seed), (0.9, Some(3)));
        let cli = Cli::parse_from(["wick", "speed", "--kv-cache-dtype", "bf16", "-m", "x.gguf"]);
        let Command::Speed(a) = cli.command else {
            panic!("expected speed")
        };
        assert_eq!(a.kv.kv_cache_dtype, candle_core::DType::BF16);
        assert_eq!(a.model.model, "x.gguf");
        let cli = Cli::parse_from(["wick", "serve", "--port", "9000", "--kv-cache-dtype", "f32"]);
        let Command::Serve(a) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(a.server.port, 9000);
        assert_eq!(a.engine.kv.kv_cache_dtype, candle_core::DType::F32);
        let cli = Cli::parse_from(["wick", "usage", "--group-by", "day", "--data-dir", "/d"]);
        let Command::Usage(a) = cli.command else {
            panic!("expected usage")
        };
        assert_eq!(a.group_by, crate::store::GroupBy::Day);
        assert_eq!(a.data_dir.as_deref(), Some(std::path::Path::new("/d")));
        assert!(Cli::try_parse_from(["wick", "usage", "--group-by", "week"]).is_err());
    }
}
