//! `wick perplexity`: the perplexity of a text file, as llama.cpp's `llama-perplexity` computes
//! it ([`crate::model::perplexity`]), with the running estimate per chunk on stdout. Runs on the
//! main thread; the model runs inline.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{load, CommandError};
use crate::config::ModelArgs;
use crate::model::perplexity::perplexity;

#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score (one trailing newline is dropped, as llama.cpp's -f does).
    #[arg(long, short)]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Chunks per forward call.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
}

/// Runs `wick perplexity`.
pub fn run(args: &PerplexityArgs) -> Result<(), CommandError> {
    let loaded = load(&args.model)?;
    let mut text = std::fs::read_to_string(&args.file).map_err(|source| CommandError::Io {
        path: args.file.clone(),
        source,
    })?;
    if text.ends_with('\n') {
        text.pop();
    }
    let tokens = loaded.tokenizer.encode(&text, false)?;
    eprintln!(
        "perplexity: {} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len() / args.ctx.max(1),
        args.ctx
    );
    let t = std::time::Instant::now();
    let report = perplexity(&loaded.model, &tokens, args.ctx, args.batch, |i, ppl| {
        print!("[{}]{:.4},", i + 1, ppl);
        let _ = std::io::stdout().flush();
    })?;
    println!();
    eprintln!(
        "{} tokens scored in {:.1} s",
        report.scored_tokens,
        t.elapsed().as_secs_f64()
    );
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        report.ppl, report.ppl_stderr
    );
    Ok(())
}
