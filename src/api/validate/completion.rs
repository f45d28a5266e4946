//! `POST /v1/completions` requests: one or more raw prompts (text or token ids), `echo`,
//! legacy `logprobs`, and score-only requests (`echo` with `max_tokens: 0`).

use super::{Draft, Output, Reply, ValidationError, Validator};
use crate::api::openai::{CompletionRequest, PromptField};
use crate::engine::ValidRequest;

/// Tokens a completions request without `max_tokens` generates (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: u64 = 16;

/// One prompt of a completions request.
#[derive(Debug, Clone)]
pub struct ValidPrompt {
    pub request: ValidRequest,
    /// The prompt's text, sent back before the completion (`echo`).
    pub echo: Option<String>,
}

/// A completions request, validated: one engine request per prompt.
#[derive(Debug, Clone)]
pub struct ValidCompletion {
    pub prompts: Vec<ValidPrompt>,
    /// Stop strings (completions take no tools).
    pub stops: Vec<String>,
    pub reply: Reply,
}

impl Validator {
    /// Validates a completions request. Text prompts are tokenized with special-token text
    /// parsed, so a prompt formatted by the client in the model's own chat format reads as it
    /// does through the chat route.
    pub fn completion(&self, req: CompletionRequest) -> Result<ValidCompletion, ValidationError> {
        let param = "prompt";
        let prompts: Vec<(Vec<u32>, String)> = match &req.prompt {
            PromptField::Text(s) => vec![(self.encode(s, param)?, s.clone())],
            PromptField::Texts(v) => v
                .iter()
                .map(|s| Ok((self.encode(s, param)?, s.clone())))
                .collect::<Result<_, ValidationError>>()?,
            PromptField::Ids(ids) => vec![self.with_text(ids)],
            PromptField::IdLists(v) => v.iter().map(|ids| self.with_text(ids)).collect(),
        };
        if prompts.is_empty() {
            return Err(ValidationError::invalid("prompt must not be empty", param));
        }
        let logprobs = req.logprobs.map(|k| (k as usize, "logprobs"));
        let output = match (req.echo, req.common.max_tokens) {
            (true, Some(0)) => Output::ScoreOnly,
            (_, max_tokens) => Output::Generate {
                max_tokens: Some(max_tokens.unwrap_or(self.default_completion_tokens())),
                param: "max_tokens",
            },
        };
        // Echoed prompts carry their scores when logprobs are asked; scoring only computes
        // them (with no alternatives) even when they are not sent.
        let prompt_logprobs = match (req.echo, output) {
            (false, _) => None,
            (true, Output::ScoreOnly) => Some(logprobs.unwrap_or((0, "logprobs"))),
            (true, Output::Generate { .. }) => logprobs,
        };
        let prompts = prompts
            .into_iter()
            .map(|(prompt, text)| {
                let request = self.request(Draft {
                    prompt,
                    input: param,
                    output,
                    logprobs,
                    prompt_logprobs,
                    common: &req.common,
                })?;
                Ok(ValidPrompt {
                    request,
                    echo: req.echo.then_some(text),
                })
            })
            .collect::<Result<_, ValidationError>>()?;
        Ok(ValidCompletion {
            prompts,
            stops: req.common.stops(),
            reply: Reply::of(&req.common, logprobs.is_some()),
        })
    }

    /// `max_tokens` of a completions request that sends none: 16, as OpenAI and vLLM default
    /// legacy completions (not the whole context), within `--max-tokens-cap`.
    fn default_completion_tokens(&self) -> u64 {
        let cap = self.max_tokens_cap.unwrap_or(usize::MAX);
        DEFAULT_COMPLETION_TOKENS.min(u64::try_from(cap).unwrap_or(u64::MAX))
    }

    /// Token ids with their text (for `echo`; an id outside the vocabulary decodes to nothing,
    /// and `request` refuses it).
    fn with_text(&self, ids: &[u32]) -> (Vec<u32>, String) {
        (ids.to_vec(), self.tokenizer.decode(ids, false))
    }
}
