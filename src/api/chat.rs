//! `POST /v1/chat/completions`: the handler, and [`ChatStream`], the pure state machine that
//! turns the engine's events into chat chunks (streamed) or, folded, the chat completion.

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
use super::{logprobs, AppState};
use crate::engine::{Event, Token};
use crate::tokenizer::Tokenizer;

/// A chat completion: JSON, or with `stream` server-sent events, one
/// `ChatCompletionChunk` per `data:` line, then `data: [DONE]`; an error after the first
/// byte is one `data: {"error": ...}` line (`ErrorEnvelope`), and the stream ends.
#[utoipa::path(
    post, path = "/v1/chat/completions", operation_id = "create_chat_completion",
    tag = "openai",
    request_body(content = ChatCompletionRequest, example = json!({
        "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8, "temperature": 0,
    })),
    responses(
        (status = 200, description = "The completion; with `stream`, its chunks as \
            server-sent events (`ChatCompletionChunk` JSON per `data:` line, then \
            `data: [DONE]`).", content(
            (ChatCompletion = "application/json"),
            (ChatCompletionEvent = "text/event-stream"),
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
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let deadline = Deadline::after(state.options().request_timeout);
    let served = state.served_for(req.common.model.as_deref()).await?;
    let validator = served.validator.clone();
    let valid = super::blocking(move || validator.chat(req)).await?;
    if let Some(Extension(note)) = &note {
        note.update(|r| r.max_tokens = Some(valid.request.max_tokens));
    }
    let meta = Meta {
        header: served.header(super::response_id("chatcmpl-"), "chat.completion.chunk"),
        tokenizer: served.validator.tokenizer().clone(),
        reply: valid.reply,
        prompt_tokens: valid.request.prompt.len(),
    };
    let n = valid.request.n;
    limits::reserve(budget.as_ref().map(|b| &b.0), valid.request.token_budget())?;
    let events = stream::merge(vec![served.engine.submit(valid.request)?]);
    let recorder = ResponseRecorder::new(state.metrics().clone()).with_note(note.map(|n| n.0));
    let machine = ChatStream::new(meta, n, &valid.text);
    if valid.reply.stream {
        return Ok(stream::sse(machine, events, deadline, recorder));
    }
    Ok(Json(stream::collect(machine, events, deadline, recorder).await?).into_response())
}

/// The chat response of one engine request with `n` choices.
pub struct ChatStream {
    header: ResponseHeader,
    tokenizer: Arc<Tokenizer>,
    choices: Vec<ChoiceText>,
    logprobs: bool,
    /// Calls go out in the legacy `function_call` shape (the request sent `functions`).
    legacy_functions: bool,
    /// End with a usage chunk (always for the non-streamed body, which reports usage).
    include_usage: bool,
    usage: UsageCount,
}

impl ChatStream {
    pub fn new(meta: Meta, n: usize, rules: &super::validate::TextRules) -> Self {
        Self {
            choices: (0..n)
                .map(|_| ChoiceText::new(meta.tokenizer.clone(), rules))
                .collect(),
            include_usage: meta.reply.include_usage || !meta.reply.stream,
            logprobs: meta.reply.logprobs,
            legacy_functions: meta.reply.legacy_functions,
            tokenizer: meta.tokenizer,
            header: meta.header,
            usage: UsageCount {
                prompt: meta.prompt_tokens,
                ..UsageCount::default()
            },
        }
    }

    fn chunk(
        &self,
        choices: Vec<ChatChunkChoice>,
        usage: Option<UsageBody>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            header: self.header.clone(),
            choices,
            usage,
        }
    }

    fn delta(index: usize, delta: Delta, logprobs: Option<ChatLogprobBody>) -> ChatChunkChoice {
        ChatChunkChoice {
            index,
            delta,
            logprobs: logprobs.map(|l| ChatLogprobs { content: vec![l] }),
            finish_reason: None,
        }
    }

    /// The chunks of one step of choice `index`; `token` is the token that made it.
    fn chunks(
        &mut self,
        index: usize,
        step: Step,
        token: Option<&Token>,
    ) -> Vec<ChatCompletionChunk> {
        let mut lp = token
            .filter(|_| self.logprobs)
            .map(|t| logprobs::chat(&self.tokenizer, t));
        let mut out = Vec::new();
        for piece in step.pieces {
            match piece {
                Piece::Text(text) => {
                    let delta = Delta {
                        content: Some(text),
                        ..Delta::default()
                    };
                    out.push(self.chunk(vec![Self::delta(index, delta, lp.take())], None));
                }
                piece => {
                    if let Some(d) = tool_call_delta(piece) {
                        out.push(self.chunk(vec![Self::delta(index, d, None)], None));
                    }
                }
            }
        }
        if lp.is_some() {
            // A token with no text of its own (held back, or part of a character) still
            // reports its logprobs.
            let delta = Delta {
                content: Some(String::new()),
                ..Delta::default()
            };
            out.push(self.chunk(vec![Self::delta(index, delta, lp)], None));
        }
        if let Some(reason) = step.finish {
            let choice = ChatChunkChoice {
                finish_reason: Some(reason),
                ..Self::delta(index, Delta::default(), None)
            };
            out.push(self.chunk(vec![choice], None));
        }
        out
    }
}

/// The delta of one piece of a call, as OpenAI streams a call: first `index`, `id`, `type`,
/// the name and arguments `""`; then `index` and argument pieces. A call's end has no delta.
fn tool_call_delta(piece: Piece) -> Option<Delta> {
    let d = match piece {
        Piece::CallStart { call, id, name } => ToolCallDelta {
            index: call,
            id: Some(id),
            kind: Some("function"),
            function: FunctionDelta {
                name: Some(name),
                arguments: String::new(),
            },
        },
        Piece::CallArgs { call, text } => ToolCallDelta {
            index: call,
            id: None,
            kind: None,
            function: FunctionDelta {
                name: None,
                arguments: text,
            },
        },
        Piece::CallEnd { .. } | Piece::Text(_) => return None,
    };
    Some(Delta {
        tool_calls: Some(vec![d]),
        ..Delta::default()
    })
}

/// A chunk in the legacy function-calling shape: the first call's deltas (index 0) as
/// `delta.function_call`, later calls dropped (the legacy message holds one call), and
/// `tool_calls` as finish reason `function_call`.
fn as_legacy_function_call(chunk: &mut ChatCompletionChunk) {
    for c in &mut chunk.choices {
        if let Some(calls) = c.delta.tool_calls.take() {
            c.delta.function_call = calls.into_iter().find(|d| d.index == 0).map(|d| d.function);
        }
        if c.finish_reason == Some(FinishReason::ToolCalls) {
            c.finish_reason = Some(FinishReason::FunctionCall);
        }
    }
    chunk.choices.retain(|c| {
        c.delta != Delta::default() || c.finish_reason.is_some() || c.logprobs.is_some()
    });
}

impl Endpoint for ChatStream {
    type Chunk = ChatCompletionChunk;
    type Body = ChatCompletion;

    fn start(&mut self) -> Vec<ChatCompletionChunk> {
        (0..self.choices.len())
            .map(|index| {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                self.chunk(vec![Self::delta(index, delta, None)], None)
            })
            .collect()
    }

    fn on(
        &mut self,
        _source: usize,
        event: Event,
    ) -> Result<Vec<ChatCompletionChunk>, StreamError> {
        let (index, step, token) = match event {
            Event::PromptScores { .. } => return Ok(Vec::new()),
            Event::Failed { error, .. } => return Err(StreamError::Failed(error)),
            Event::Token { index, token } => {
                let Some(c) = self.choices.get_mut(index).filter(|c| !c.is_done()) else {
                    return Ok(Vec::new());
                };
                (index, self.usage.token(c, token.id), Some(token))
            }
            Event::Finished { index, finish } => {
                let Some(c) = self.choices.get_mut(index).filter(|c| !c.is_done()) else {
                    return Ok(Vec::new());
                };
                (index, self.usage.finish(c, finish)?, None)
            }
        };
        let mut chunks = self.chunks(index, step, token.as_ref());
        if self.legacy_functions {
            chunks.iter_mut().for_each(as_legacy_function_call);
            chunks.retain(|c| !c.choices.is_empty());
        }
        Ok(chunks)
    }

    fn is_finished(&self) -> bool {
        self.choices.iter().all(ChoiceText::is_done)
    }

    fn end(&mut self) -> Vec<ChatCompletionChunk> {
        match self.include_usage {
            true => vec![self.chunk(Vec::new(), Some(self.usage.body()))],
            false => Vec::new(),
        }
    }

    fn fold(&self, chunks: Vec<ChatCompletionChunk>) -> ChatCompletion {
        let mut choices: Vec<Folded> = (0..self.choices.len()).map(|_| Folded::default()).collect();
        let mut usage = None;
        for chunk in chunks {
            usage = chunk.usage.or(usage);
            for c in chunk.choices {
                if let Some(f) = choices.get_mut(c.index) {
                    f.add(c);
                }
            }
        }
        let header = ResponseHeader {
            object: "chat.completion",
            ..self.header.clone()
        };
        let choices = choices
            .into_iter()
            .enumerate()
            .map(|(index, f)| f.choice(index, self.logprobs))
            .collect();
        ChatCompletion {
            header,
            choices,
            usage,
        }
    }
}

/// One choice's chunks, added up.
#[derive(Default)]
struct Folded {
    content: String,
    calls: Vec<ToolCallBody>,
    /// The legacy call (`delta.function_call` pieces added up).
    function_call: Option<FunctionCallBody>,
    logprobs: Vec<ChatLogprobBody>,
    finish_reason: Option<FinishReason>,
}

impl Folded {
    fn add(&mut self, c: ChatChunkChoice) {
        self.content
            .push_str(c.delta.content.as_deref().unwrap_or(""));
        for d in c.delta.tool_calls.into_iter().flatten() {
            match (d.id, self.calls.get_mut(d.index)) {
                (Some(id), _) => self.calls.push(ToolCallBody {
                    id,
                    kind: "function",
                    function: FunctionCallBody {
                        name: d.function.name.unwrap_or_default(),
                        arguments: d.function.arguments,
                    },
                }),
                (None, Some(call)) => call.function.arguments.push_str(&d.function.arguments),
                (None, None) => {}
            }
        }
        if let Some(d) = c.delta.function_call {
            let call = self.function_call.get_or_insert(FunctionCallBody {
                name: String::new(),
                arguments: String::new(),
            });
            call.name.push_str(d.name.as_deref().unwrap_or(""));
            call.arguments.push_str(&d.arguments);
        }
        self.logprobs
            .extend(c.logprobs.into_iter().flat_map(|l| l.content));
        self.finish_reason = c.finish_reason.or(self.finish_reason);
    }

    fn choice(self, index: usize, logprobs: bool) -> ChatChoice {
        ChatChoice {
            index,
            message: ChatMessageBody {
                role: "assistant",
                // As OpenAI: content null when the message is calls only.
                content: (!self.content.is_empty()
                    || (self.calls.is_empty() && self.function_call.is_none()))
                .then_some(self.content),
                tool_calls: (!self.calls.is_empty()).then_some(self.calls),
                function_call: self.function_call,
            },
            logprobs: logprobs.then_some(ChatLogprobs {
                content: self.logprobs,
            }),
            finish_reason: self.finish_reason,
        }
    }
}

#[cfg(test)]
mod tests;
