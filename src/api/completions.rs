//! `POST /v1/completions` (legacy): the handler, and [`CompletionStream`], the pure state
//! machine over the events of one engine request per prompt (`n` choices each): the echoed
//! prompt (with its scores under `logprobs`), text, legacy logprobs, finish reasons, usage.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::access::AccessNote;
use super::choice_text::{ChoiceText, Piece, Step};
use super::error::{ApiError, ErrorEnvelope};
use super::extract::OpenAiJson;
use super::limits::{self, Budget};
use super::metrics::ResponseRecorder;
use super::openai::*;
use super::stream::{self, Deadline, Endpoint, Meta, StreamError, UsageCount};
use super::validate::TextRules;
use super::{logprobs, AppState};
use crate::engine::{Event, Token};
use crate::tokenizer::Tokenizer;

/// A legacy completion: JSON, or with `stream` server-sent events, one `Completion` chunk
/// per `data:` line, then `data: [DONE]`; an error after the first byte is one
/// `data: {"error": ...}` line (`ErrorEnvelope`), and the stream ends.
#[utoipa::path(
    post, path = "/v1/completions", operation_id = "create_completion", tag = "openai",
    request_body(content = CompletionRequest, example = json!({
        "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0,
    })),
    responses(
        (status = 200, description = "The completion; with `stream`, its chunks as \
            server-sent events (`Completion` JSON per `data:` line, then `data: [DONE]`).",
            content(
            (Completion = "application/json"),
            (CompletionEvent = "text/event-stream"),
        )),
        (status = 400, response = ErrorEnvelope),
        (status = 404, response = ErrorEnvelope),
        (status = 413, response = ErrorEnvelope),
        (status = 429, response = ErrorEnvelope),
        (status = 503, response = ErrorEnvelope),
        (status = 504, response = ErrorEnvelope),
    ),
)]
pub async fn handle(
    State(state): State<AppState>,
    note: Option<Extension<AccessNote>>,
    budget: Option<Extension<Budget>>,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let deadline = Deadline::after(state.options().request_timeout);
    let served = state.served_for(req.common.model.as_deref()).await?;
    let validator = served.validator.clone();
    let valid = super::blocking(move || validator.completion(req)).await?;
    let n = valid.prompts.first().map_or(1, |p| p.request.n);
    let size = valid.prompts.iter().map(|p| p.request.token_budget()).sum();
    limits::reserve(budget.as_ref().map(|b| &b.0), size)?;
    if let (Some(Extension(note)), Some(p)) = (&note, valid.prompts.first()) {
        note.update(|r| r.max_tokens = Some(p.request.max_tokens));
    }
    let meta = Meta {
        header: served.header(super::response_id("cmpl-"), "text_completion"),
        tokenizer: served.validator.tokenizer().clone(),
        reply: valid.reply,
        prompt_tokens: valid.prompts.iter().map(|p| p.request.prompt.len()).sum(),
    };
    let rules = TextRules {
        stops: valid.stops,
        ..TextRules::default()
    };
    let mut echoes = Vec::new();
    let mut streams = Vec::new();
    for p in valid.prompts {
        echoes.push(p.echo);
        // A refusal drops the streams already made, which cancels them.
        streams.push(served.engine.submit(p.request)?);
    }
    let machine = CompletionStream::new(meta, n, &rules, echoes);
    let events = stream::merge(streams);
    let recorder = ResponseRecorder::new(state.metrics().clone()).with_note(note.map(|n| n.0));
    if valid.reply.stream {
        return Ok(stream::sse(machine, events, deadline, recorder));
    }
    Ok(Json(stream::collect(machine, events, deadline, recorder).await?).into_response())
}

/// One choice of a completions response.
struct Choice {
    text: ChoiceText,
    /// The prompt's text, to send before the completion (`echo`) once.
    echo: Option<String>,
    /// Bytes of text sent so far (legacy logprobs' `text_offset`).
    offset: usize,
}

/// The completions response of one engine request per prompt, `n` choices each; choice
/// `prompt * n + i` is choice `i` of prompt `prompt`.
pub struct CompletionStream {
    header: ResponseHeader,
    tokenizer: Arc<Tokenizer>,
    n: usize,
    choices: Vec<Choice>,
    logprobs: bool,
    include_usage: bool,
    usage: UsageCount,
}

impl CompletionStream {
    /// `echoes` holds each prompt's echo text (`None` without `echo`).
    pub fn new(meta: Meta, n: usize, rules: &TextRules, echoes: Vec<Option<String>>) -> Self {
        let choices = echoes
            .into_iter()
            .flat_map(|e| std::iter::repeat_n(e, n))
            .map(|echo| Choice {
                text: ChoiceText::new(meta.tokenizer.clone(), rules),
                echo,
                offset: 0,
            })
            .collect();
        Self {
            header: meta.header,
            tokenizer: meta.tokenizer,
            n,
            choices,
            logprobs: meta.reply.logprobs,
            include_usage: meta.reply.include_usage || !meta.reply.stream,
            usage: UsageCount {
                prompt: meta.prompt_tokens,
                ..UsageCount::default()
            },
        }
    }

    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<UsageBody>) -> Completion {
        Completion {
            header: self.header.clone(),
            choices,
            usage,
        }
    }

    fn text_chunk(&self, index: usize, text: String, lp: Option<CompletionLogprobs>) -> Completion {
        let choice = CompletionChoice {
            index,
            text,
            logprobs: lp,
            finish_reason: None,
        };
        self.chunk(vec![choice], None)
    }

    /// The echoed prompts of `source`'s choices, with `scores` when logprobs are asked.
    fn echo(&mut self, source: usize, scores: Option<&[Token]>) -> Vec<Completion> {
        let mut out = Vec::new();
        for index in source * self.n..(source + 1) * self.n {
            let Some(text) = self.choices.get_mut(index).and_then(|c| c.echo.take()) else {
                continue;
            };
            let lp = scores.map(|s| logprobs::completion(&self.tokenizer, s, 0));
            self.choices[index].offset = text.len();
            out.push(self.text_chunk(index, text, lp));
        }
        out
    }

    /// The chunks of one step of choice `index`; `token` is the token that made it.
    fn chunks(&mut self, index: usize, step: Step, token: Option<&Token>) -> Vec<Completion> {
        let mut lp = token.filter(|_| self.logprobs);
        let mut out = Vec::new();
        for piece in step.pieces {
            if let Piece::Text(text) = piece {
                let offset = self.choices[index].offset;
                let l = lp.take().map(|t| {
                    logprobs::completion(&self.tokenizer, std::slice::from_ref(t), offset)
                });
                self.choices[index].offset += text.len();
                out.push(self.text_chunk(index, text, l));
            }
        }
        if let Some(t) = lp {
            let offset = self.choices[index].offset;
            let l = logprobs::completion(&self.tokenizer, std::slice::from_ref(t), offset);
            out.push(self.text_chunk(index, String::new(), Some(l)));
        }
        if let Some(reason) = step.finish {
            let choice = CompletionChoice {
                index,
                text: String::new(),
                logprobs: None,
                finish_reason: Some(reason),
            };
            out.push(self.chunk(vec![choice], None));
        }
        out
    }
}

impl Endpoint for CompletionStream {
    type Chunk = Completion;
    type Body = Completion;

    fn start(&mut self) -> Vec<Completion> {
        if self.logprobs {
            return Vec::new(); // an echo waits for its prompt's scores
        }
        let prompts = self.choices.len() / self.n.max(1);
        (0..prompts).flat_map(|p| self.echo(p, None)).collect()
    }

    fn on(&mut self, source: usize, event: Event) -> Result<Vec<Completion>, StreamError> {
        let (offset, step, token) = match event {
            Event::PromptScores { tokens } => {
                return Ok(match self.logprobs {
                    true => self.echo(source, Some(&tokens)),
                    false => Vec::new(),
                })
            }
            Event::Failed { error, .. } => return Err(StreamError::Failed(error)),
            Event::Token { index, token } => {
                let at = source * self.n + index;
                let Some(c) = self.choices.get_mut(at).filter(|c| !c.text.is_done()) else {
                    return Ok(Vec::new());
                };
                (at, self.usage.token(&mut c.text, token.id), Some(token))
            }
            Event::Finished { index, finish } => {
                let at = source * self.n + index;
                let Some(c) = self.choices.get_mut(at).filter(|c| !c.text.is_done()) else {
                    return Ok(Vec::new());
                };
                (at, self.usage.finish(&mut c.text, finish)?, None)
            }
        };
        Ok(self.chunks(offset, step, token.as_ref()))
    }

    fn is_finished(&self) -> bool {
        self.choices.iter().all(|c| c.text.is_done())
    }

    fn end(&mut self) -> Vec<Completion> {
        match self.include_usage {
            true => vec![self.chunk(Vec::new(), Some(self.usage.body()))],
            false => Vec::new(),
        }
    }

    fn fold(&self, chunks: Vec<Completion>) -> Completion {
        let mut choices: Vec<CompletionChoice> = (0..self.choices.len())
            .map(|index| CompletionChoice {
                index,
                text: String::new(),
                logprobs: self.logprobs.then(CompletionLogprobs::default),
                finish_reason: None,
            })
            .collect();
        let mut usage = None;
        for chunk in chunks {
            usage = chunk.usage.or(usage);
            for c in chunk.choices {
                let Some(f) = choices.get_mut(c.index) else {
                    continue;
                };
                f.text.push_str(&c.text);
                if let (Some(into), Some(more)) = (f.logprobs.as_mut(), c.logprobs) {
                    logprobs::extend(into, more);
                }
                f.finish_reason = c.finish_reason.or(f.finish_reason);
            }
        }
        self.chunk(choices, usage)
    }
}

#[cfg(test)]
mod tests;
