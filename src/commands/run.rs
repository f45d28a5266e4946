//! `wick run`: one prompt (a user message through the chat template, or raw text), its reply
//! streamed to stdout and a timing line to stderr. Runs on the main thread through
//! [`model::generate`](crate::model::generate), the single-sequence loop; the engine is not
//! involved.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{load, CommandError};
use crate::config::{ModelArgs, SamplingArgs};
use crate::model::generate::{generate, Finish, GenerateOptions, Generation};
use crate::model::{CausalLm, LoadedModel};
use crate::sampling::SamplingParams;
use crate::tokenizer::{render_prompt, IncrementalDecoder};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (a user message, unless --raw).
    pub prompt: String,
    /// Feed the prompt as raw text: no chat template.
    #[arg(long)]
    pub raw: bool,
    /// A system message for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Prompt tokens per forward call.
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: usize,
}

/// Runs `wick run`.
pub fn run(args: &RunArgs) -> Result<(), CommandError> {
    let loaded = load(&args.model)?;
    let prompt = prompt_ids(args, &loaded)?;
    let sampling = SamplingParams::from(&args.sampling);
    sampling.validate(loaded.model.vocab_size())?;
    let tokenizer = Arc::new(loaded.tokenizer);
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_ids: tokenizer.stop_token_ids().to_vec(),
        prefill_chunk: args.prefill_chunk,
        kv_dtype: candle_core::DType::F16,
    };
    let mut detok = IncrementalDecoder::new(tokenizer.clone(), true);
    let mut out = std::io::stdout().lock();
    let gen = generate(&loaded.model, &prompt, &opts, |tok| {
        let piece = detok.push(tok.id);
        // A closed stdout (a pipe into `head`) ends generation quietly.
        out.write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
    })?;
    let rest = detok.flush();
    let _ = writeln!(out, "{rest}");
    eprintln!("\n{}", summary(prompt.len(), &gen));
    Ok(())
}

/// The prompt's ids: the user message (after `--system`, if given) through the chat template,
/// or with `--raw` the text itself, encoded as plain text.
fn prompt_ids(args: &RunArgs, loaded: &LoadedModel) -> Result<Vec<u32>, CommandError> {
    if args.raw {
        return Ok(loaded.tokenizer.encode_prompt(&args.prompt, false)?);
    }
    let template = loaded
        .chat_template
        .as_ref()
        .ok_or(CommandError::NoChatTemplate)?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    messages.push(serde_json::json!({"role": "user", "content": args.prompt}));
    Ok(render_prompt(template, &loaded.tokenizer, &messages, None)?.ids)
}

/// `[prompt: N tokens, R tok/s | generation: M tokens, R tok/s | finish: why]`.
fn summary(prompt_tokens: usize, gen: &Generation) -> String {
    let rate = |count: usize, d: Duration| count as f64 / d.as_secs_f64().max(1e-9);
    let n = gen.tokens.len();
    let finish = match gen.finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::Cancelled => "cancelled",
    };
    format!(
        "[prompt: {} tokens, {:.1} tok/s | generation: {} tokens, {:.1} tok/s | finish: {}]",
        prompt_tokens,
        rate(prompt_tokens, gen.prompt_time),
        n,
        rate(n.saturating_sub(1), gen.gen_time),
        finish
    )
}
