//! The one validation stage: each wire request (`api::openai`) becomes what the engine runs
//! (a [`ValidRequest`] of token ids) plus what the response stage needs (the text rules, the
//! reply options), checked against the [`ModelLimits`] the engine reported at start. Nothing
//! after this stage checks a request again.
//!
//! Templates, tokenization and grammar compilation are CPU work: handlers run this on
//! `spawn_blocking`, never on the async threads or the engine's worker. Errors are
//! [`ValidationError`]s that name the request field at fault; `api::error` turns them into
//! HTTP responses (this module knows nothing of HTTP).

mod chat;
mod completion;
mod embeddings;
pub mod messages;
pub mod tools;

use std::sync::Arc;

use crate::constraint::{Constraint, ConstraintError, Grammar, GrammarCompiler};
use crate::engine::{ModelLimits, ValidRequest};
use crate::sampling::{SamplingError, SamplingParams};
use crate::tokenizer::{ChatTemplate, Tokenizer};

use super::openai::CommonParams;
pub use chat::{flatten_message, response_format, ValidChat};
pub use completion::{ValidCompletion, ValidPrompt};
pub use embeddings::ValidEmbedding;

/// A request that cannot be served as sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// A field is missing, malformed or out of range; `param` names it.
    #[error("{message}")]
    Invalid { message: String, param: String },
    /// The input and the output asked for do not fit the context (or the KV cache); `param`
    /// is the field that holds the input (`messages`, `prompt`, `input`).
    #[error("{message}")]
    ContextLength {
        message: String,
        param: &'static str,
    },
    /// Validation itself failed on our side (the grammar compiler broke).
    #[error("{0}")]
    Internal(String),
}

impl ValidationError {
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        ValidationError::Invalid {
            message: message.into(),
            param: param.into(),
        }
    }

    /// The request field at fault (empty for an internal error).
    pub fn param(&self) -> &str {
        match self {
            ValidationError::Invalid { param, .. } => param,
            ValidationError::ContextLength { param, .. } => param,
            ValidationError::Internal(_) => "",
        }
    }
}

/// How each choice's text is post-processed in the response stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextRules {
    /// Stop strings: the text ends before the first one, which is left out.
    pub stops: Vec<String>,
    /// Parse `<tool_call>` blocks calling these functions out of the text (tools given and
    /// `tool_choice` not `none`); `None`: no tools.
    pub tool_names: Option<Vec<String>>,
    /// One call at most (a named `tool_choice`, or `parallel_tool_calls: false`): the choice
    /// ends where its first call ends.
    pub single_call: bool,
}

/// How the response goes out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reply {
    /// Server-sent events rather than one JSON body.
    pub stream: bool,
    /// A streamed response ends with a usage chunk.
    pub include_usage: bool,
    /// Per-token logprobs in the output.
    pub logprobs: bool,
    /// The request sent the legacy `functions`: a call goes out as `function_call` (the
    /// first call only) with `finish_reason: "function_call"`, not as `tool_calls`.
    pub legacy_functions: bool,
}

impl Reply {
    fn of(common: &CommonParams, logprobs: bool) -> Self {
        Self {
            stream: common.stream == Some(true),
            include_usage: common
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            logprobs,
            legacy_functions: false,
        }
    }
}

/// What validation reads: the model's tokenizer, chat template, grammar compiler and limits.
/// Shared by every request (`Arc`), moved onto the blocking thread that validates.
pub struct Validator {
    tokenizer: Arc<Tokenizer>,
    template: Option<Arc<ChatTemplate>>,
    /// `None` when the vocabulary could not be indexed for llguidance (constrained requests
    /// then get a 400).
    grammar: Option<GrammarCompiler>,
    limits: ModelLimits,
    /// The server's cap on `max_tokens` (`--max-tokens-cap`).
    max_tokens_cap: Option<usize>,
}

impl Validator {
    /// Builds the grammar compiler, which indexes the whole vocabulary: call it off the async
    /// threads.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        template: Option<Arc<ChatTemplate>>,
        limits: ModelLimits,
    ) -> Self {
        let grammar = GrammarCompiler::from_tokenizer(tokenizer.clone())
            .map_err(|e| tracing::warn!(error = %e, "constrained decoding is off"))
            .ok();
        Self {
            tokenizer,
            template,
            grammar,
            limits,
            max_tokens_cap: None,
        }
    }

    /// Caps `max_tokens`: a request asking for more is refused, one asking for nothing gets
    /// at most `cap`.
    pub fn with_max_tokens_cap(mut self, cap: Option<usize>) -> Self {
        self.max_tokens_cap = cap;
        self
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn limits(&self) -> &ModelLimits {
        &self.limits
    }

    /// Compiles `grammar`; a schema llguidance rejects is a 400 naming `param`.
    fn compile(&self, grammar: &Grammar, param: &str) -> Result<Constraint, ValidationError> {
        let compiler = self.grammar.as_ref().ok_or_else(|| {
            ValidationError::invalid(
                "constrained output is not available for this model's vocabulary",
                param,
            )
        })?;
        compiler.compile(grammar).map_err(|e| match e {
            ConstraintError::Compile(m) => ValidationError::invalid(
                format!("{param}: unsupported or invalid schema: {m}"),
                param,
            ),
            other => ValidationError::Internal(other.to_string()),
        })
    }

    /// Token ids of a text input, special-token text parsed (a raw ChatML prompt means its
    /// `<|im_start|>`s, as llama.cpp and vLLM read it), BOS added where the model wants one.
    fn encode(&self, text: &str, param: &'static str) -> Result<Vec<u32>, ValidationError> {
        self.tokenizer
            .encode_prompt(text, true)
            .map_err(|e| ValidationError::invalid(e.to_string(), param))
    }

    /// Checks token ids sent as they are: none empty, each below the vocabulary.
    fn check_ids(&self, ids: &[u32], param: &'static str) -> Result<(), ValidationError> {
        if ids.is_empty() {
            return Err(ValidationError::invalid(format!("{param} is empty"), param));
        }
        let vocab = self.limits.vocab;
        match ids.iter().find(|&&t| t as usize >= vocab) {
            Some(id) => Err(ValidationError::invalid(
                format!("token id {id} out of range: the vocabulary has {vocab} tokens"),
                param,
            )),
            None => Ok(()),
        }
    }

    /// The engine request for `draft`, every limit checked.
    fn request(&self, draft: Draft<'_>) -> Result<ValidRequest, ValidationError> {
        let Draft {
            prompt,
            input,
            output,
            logprobs,
            prompt_logprobs,
            common,
        } = draft;
        self.check_ids(&prompt, input)?;
        let n = self.check_n(common.n)?;
        let max_tokens = self.max_tokens(prompt.len(), output, input)?;
        if let Some((k, param)) = prompt_logprobs {
            self.check_top(k, param)?;
        }
        let sampling = self.sampling(common, logprobs)?;
        let stop_ids = match common.ignore_eos {
            Some(true) => Vec::new(),
            _ => self.tokenizer.stop_token_ids().to_vec(),
        };
        Ok(ValidRequest {
            prompt,
            max_tokens,
            sampling,
            stop_ids,
            n,
            // The engine runs higher first; vLLM's field (which clients send) means lower first.
            priority: common.priority.unwrap_or(0).saturating_neg(),
            prompt_logprobs: prompt_logprobs.map(|(k, _)| k),
            constraint: None,
        })
    }

    fn check_n(&self, n: Option<u64>) -> Result<usize, ValidationError> {
        let max = self.limits.max_n;
        match n.unwrap_or(1) {
            n @ 1.. if n <= max as u64 => Ok(n as usize),
            n => Err(ValidationError::invalid(
                format!("n must be between 1 and {max}, got {n}"),
                "n",
            )),
        }
    }

    fn check_top(&self, k: usize, param: &'static str) -> Result<(), ValidationError> {
        let max = self.limits.max_top_logprobs;
        match k > max {
            true => Err(ValidationError::invalid(
                format!("{param} must be at most {max}, got {k}"),
                param,
            )),
            false => Ok(()),
        }
    }

    /// Tokens to generate: as asked (at least 1), or what the context leaves; checked against
    /// the context and the KV cache.
    fn max_tokens(
        &self,
        prompt: usize,
        output: Output,
        input: &'static str,
    ) -> Result<usize, ValidationError> {
        let lim = &self.limits;
        let left = lim.max_sequence_tokens().saturating_sub(prompt);
        let max_tokens = match output {
            Output::ScoreOnly => 0,
            Output::Generate {
                max_tokens: Some(0),
                param,
            } => {
                return Err(ValidationError::invalid(
                    format!("{param} must be at least 1"),
                    param,
                ))
            }
            Output::Generate {
                max_tokens: Some(m),
                param,
            } => {
                let m = usize::try_from(m).unwrap_or(usize::MAX);
                match self.max_tokens_cap {
                    Some(cap) if m > cap => {
                        return Err(ValidationError::invalid(
                            format!("{param} must be at most {cap} on this server, got {m}"),
                            param,
                        ))
                    }
                    _ => m,
                }
            }
            Output::Generate {
                max_tokens: None, ..
            } if left == 0 => {
                let message = format!(
                    "prompt has {prompt} tokens, which fills the context of {} tokens",
                    lim.max_sequence_tokens()
                );
                return Err(ValidationError::ContextLength {
                    message,
                    param: input,
                });
            }
            Output::Generate {
                max_tokens: None, ..
            } => left.min(self.max_tokens_cap.unwrap_or(usize::MAX)),
        };
        let need = prompt.saturating_add(max_tokens);
        let message = if need > lim.max_context {
            format!(
                "prompt has {prompt} tokens + max_tokens {max_tokens} > context {}",
                lim.max_context
            )
        } else if need > lim.kv_capacity_tokens {
            format!(
                "prompt has {prompt} tokens + max_tokens {max_tokens} = {need} tokens > KV cache capacity {} tokens",
                lim.kv_capacity_tokens
            )
        } else {
            return Ok(max_tokens);
        };
        Err(ValidationError::ContextLength {
            message,
            param: input,
        })
    }

    /// The sampling parameters, validated against the vocabulary. `logprobs` is the top-n
    /// count per generated token and the field it came from.
    fn sampling(
        &self,
        c: &CommonParams,
        logprobs: Option<(usize, &'static str)>,
    ) -> Result<SamplingParams, ValidationError> {
        let mut logit_bias = Vec::new();
        for (k, v) in c.logit_bias.iter().flatten() {
            let id: u32 = k.parse().map_err(|_| {
                ValidationError::invalid(
                    format!("logit_bias keys must be token ids, got {k:?}"),
                    "logit_bias",
                )
            })?;
            logit_bias.push((id, *v));
        }
        let params = SamplingParams {
            temperature: c.temperature.unwrap_or(1.0),
            top_k: c.top_k.unwrap_or(0).max(0) as usize,
            top_p: c.top_p.unwrap_or(1.0),
            min_p: c.min_p.unwrap_or(0.0),
            repetition_penalty: c.repetition_penalty.unwrap_or(1.0),
            presence_penalty: c.presence_penalty.unwrap_or(0.0),
            frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: c.seed,
            logprobs: logprobs.map(|(k, _)| k),
        };
        params.validate(self.limits.vocab).map_err(|e| match e {
            SamplingError::InvalidParam { field, message } => {
                // The sampler's `logprobs` is the field the request used for the count.
                let param = match (field, logprobs) {
                    ("logprobs", Some((_, p))) => p,
                    (f, _) => f,
                };
                ValidationError::invalid(message, param)
            }
            other => ValidationError::Internal(other.to_string()),
        })?;
        Ok(params)
    }
}

/// What a request generates.
#[derive(Debug, Clone, Copy)]
enum Output {
    /// Up to `max_tokens` per choice (`None`: what the context leaves), from the field `param`.
    Generate {
        max_tokens: Option<u64>,
        param: &'static str,
    },
    /// Nothing: only the prompt is scored (`echo` with `max_tokens: 0`).
    ScoreOnly,
}

/// The parts of an engine request, before the limits are checked.
struct Draft<'a> {
    prompt: Vec<u32>,
    /// The field holding the input, named in errors about it.
    input: &'static str,
    output: Output,
    /// Top-n alternatives per generated token, and the field that asked.
    logprobs: Option<(usize, &'static str)>,
    /// Score the prompt with top-n alternatives, and the field that asked.
    prompt_logprobs: Option<(usize, &'static str)>,
    common: &'a CommonParams,
}

#[cfg(test)]
mod tests;
