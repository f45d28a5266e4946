//! [`ResponsesStream`]: the pure state machine that turns one engine request's events into the
//! Responses API's event sequence, as OpenAI sends it:
//! `response.created`, `response.in_progress`, then per output item `response.output_item.added`
//! (a message: `response.content_part.added`, `response.output_text.delta`s,
//! `response.output_text.done`, `response.content_part.done`; a function call:
//! `response.function_call_arguments.delta` / `.done`), `response.output_item.done`, and one
//! terminal event: `response.completed`, `response.incomplete` (the output limit) or
//! `response.failed` (an engine failure after `response.created`). `sequence_number` counts
//! from 0 by one. The same machine drives the SSE stream, the JSON body (the terminal event's
//! response), the background task and the WebSocket mode, so they cannot drift. Runs on the
//! response's task; no I/O.

use std::sync::Arc;

use super::types::*;
use crate::api::choice_text::{ChoiceText, Piece, Step};
use crate::api::error::ApiError;
use crate::api::openai::{ChatLogprobBody, FinishReason};
use crate::api::stream::{Endpoint, StreamError, UsageCount};
use crate::api::validate::TextRules;
use crate::api::{logprobs, unix_now};
use crate::engine::{Event, Token};
use crate::tokenizer::Tokenizer;

/// The message being written.
struct OpenMessage {
    id: String,
    text: String,
    logprobs: Vec<Logprob>,
}

/// What a response's machine starts from.
pub struct StreamSetup {
    /// The response as created: `in_progress`, no output, the request's fields echoed.
    pub base: ResponseObject,
    pub tokenizer: Arc<Tokenizer>,
    pub rules: TextRules,
    /// Per-token logprobs in the output text.
    pub logprobs: bool,
    /// `false`: the WebSocket warm-up; what the engine generates is dropped.
    pub generate: bool,
    pub prompt_tokens: usize,
    /// Makes the output items' ids (`msg_...`, `fc_...`).
    pub new_id: fn(&str) -> String,
}

/// One response's event state.
pub struct ResponsesStream {
    setup: StreamSetup,
    text: ChoiceText,
    seq: u64,
    /// Finished output items, in order.
    output: Vec<OutputItem>,
    open: Option<OpenMessage>,
    /// The function call being written.
    calling: Option<OutputItem>,
    /// Logprobs of tokens whose text has not come out yet (held back, or part of a character).
    pending: Vec<Logprob>,
    usage: UsageCount,
    finish: Option<FinishReason>,
}

fn logprob(l: ChatLogprobBody) -> Logprob {
    Logprob {
        token: l.token,
        logprob: l.logprob,
        bytes: l.bytes,
        top_logprobs: l
            .top_logprobs
            .into_iter()
            .map(|t| TopLogprob {
                token: t.token,
                logprob: t.logprob,
                bytes: t.bytes,
            })
            .collect(),
    }
}

impl ResponsesStream {
    pub fn new(setup: StreamSetup) -> Self {
        Self {
            text: ChoiceText::new(setup.tokenizer.clone(), &setup.rules),
            usage: UsageCount {
                prompt: setup.prompt_tokens,
                ..UsageCount::default()
            },
            setup,
            seq: 0,
            output: Vec::new(),
            open: None,
            calling: None,
            pending: Vec::new(),
            finish: None,
        }
    }

    fn event(&mut self, kind: EventKind) -> ResponseEvent {
        let e = ResponseEvent {
            kind,
            sequence_number: self.seq,
        };
        self.seq += 1;
        e
    }

    /// The response as it stands, with `status`.
    fn snapshot(&self, status: Status) -> Box<ResponseObject> {
        let mut r = self.setup.base.clone();
        r.status = status;
        r.output = self.output.clone();
        if status.is_final() {
            let output = match self.setup.generate {
                true => self.usage.completion,
                false => 0,
            };
            r.usage = Some(ResponseUsage::new(
                self.usage.prompt,
                output,
                self.usage.cached,
            ));
        }
        if status == Status::Completed {
            r.completed_at = Some(unix_now());
        }
        if status == Status::Incomplete {
            r.incomplete_details = Some(IncompleteDetails {
                reason: "max_output_tokens",
            });
        }
        Box::new(r)
    }

    /// The events of one piece of output; `lp` is the logprob of the token that made it, `end`
    /// the status a call ending here gets (`Incomplete` when the output limit cut it).
    /// The one place [`Piece`] is read.
    fn piece(&mut self, piece: Piece, lp: &mut Option<Logprob>, end: Status) -> Vec<ResponseEvent> {
        match piece {
            Piece::Text(text) => {
                let mut out = self.open_message();
                let mut logprobs = std::mem::take(&mut self.pending);
                logprobs.extend(lp.take());
                out.push(self.text_delta(text, logprobs));
                out
            }
            Piece::CallStart { id, name, .. } => self.call_start(id, name),
            Piece::CallArgs { text, .. } => self.call_args(text),
            Piece::CallEnd { .. } => self.call_end(end),
        }
    }

    fn open_message(&mut self) -> Vec<ResponseEvent> {
        if self.open.is_some() {
            return Vec::new();
        }
        let id = (self.setup.new_id)("msg_");
        let output_index = self.output.len();
        let item = OutputItem::Message {
            id: id.clone(),
            status: Status::InProgress,
            role: "assistant",
            content: Vec::new(),
        };
        self.open = Some(OpenMessage {
            id: id.clone(),
            text: String::new(),
            logprobs: Vec::new(),
        });
        vec![
            self.event(EventKind::ItemAdded { output_index, item }),
            self.event(EventKind::PartAdded {
                item_id: id,
                output_index,
                content_index: 0,
                part: OutputText::new(String::new(), Vec::new()),
            }),
        ]
    }

    /// A delta of the open message (`open_message` opened it right before).
    fn text_delta(&mut self, delta: String, logprobs: Vec<Logprob>) -> ResponseEvent {
        let output_index = self.output.len();
        let keep = self.setup.logprobs;
        let mut item_id = String::new();
        if let Some(open) = self.open.as_mut() {
            open.text.push_str(&delta);
            if keep {
                open.logprobs.extend(logprobs.iter().cloned());
            }
            item_id = open.id.clone();
        }
        self.event(EventKind::TextDelta {
            item_id,
            output_index,
            content_index: 0,
            delta,
            logprobs,
        })
    }

    /// Ends the open message (if any) with `status`.
    fn close_message(&mut self, status: Status) -> Vec<ResponseEvent> {
        let Some(mut open) = self.open.take() else {
            return Vec::new();
        };
        open.logprobs.append(&mut self.pending);
        let output_index = self.output.len();
        let part = OutputText::new(open.text.clone(), open.logprobs.clone());
        let item = OutputItem::Message {
            id: open.id.clone(),
            status,
            role: "assistant",
            content: vec![part.clone()],
        };
        let out = vec![
            self.event(EventKind::TextDone {
                item_id: open.id.clone(),
                output_index,
                content_index: 0,
                text: open.text,
                logprobs: open.logprobs,
            }),
            self.event(EventKind::PartDone {
                item_id: open.id,
                output_index,
                content_index: 0,
                part,
            }),
            self.event(EventKind::ItemDone {
                output_index,
                item: item.clone(),
            }),
        ];
        self.output.push(item);
        out
    }

    /// A function call starts: its item is added with empty arguments.
    fn call_start(&mut self, call_id: String, name: String) -> Vec<ResponseEvent> {
        let mut out = self.close_message(Status::Completed);
        let id = (self.setup.new_id)("fc_");
        let output_index = self.output.len();
        let item = OutputItem::FunctionCall {
            id: id.clone(),
            call_id,
            name,
            arguments: String::new(),
            status: Status::InProgress,
        };
        self.calling = Some(item.clone());
        out.push(self.event(EventKind::ItemAdded { output_index, item }));
        out
    }

    /// More of the open call's arguments.
    fn call_args(&mut self, delta: String) -> Vec<ResponseEvent> {
        let output_index = self.output.len();
        let Some(OutputItem::FunctionCall { id, arguments, .. }) = self.calling.as_mut() else {
            return Vec::new();
        };
        arguments.push_str(&delta);
        let item_id = id.clone();
        vec![self.event(EventKind::ArgumentsDelta {
            item_id,
            output_index,
            delta,
        })]
    }

    /// The open call is complete (`Completed`), or cut by the output limit (`Incomplete`).
    fn call_end(&mut self, end: Status) -> Vec<ResponseEvent> {
        let output_index = self.output.len();
        let Some(mut item) = self.calling.take() else {
            return Vec::new();
        };
        let OutputItem::FunctionCall {
            id,
            name,
            arguments,
            status,
            ..
        } = &mut item
        else {
            return Vec::new();
        };
        *status = end;
        let done = self.event(EventKind::ArgumentsDone {
            item_id: id.clone(),
            output_index,
            name: name.clone(),
            arguments: arguments.clone(),
        });
        let out = vec![
            done,
            self.event(EventKind::ItemDone {
                output_index,
                item: item.clone(),
            }),
        ];
        self.output.push(item);
        out
    }

    /// The events of one step of the choice.
    fn step(&mut self, step: Step, token: Option<&Token>) -> Vec<ResponseEvent> {
        if !self.setup.generate {
            self.finish = step.finish.or(self.finish);
            return Vec::new();
        }
        let mut lp = token
            .filter(|_| self.setup.logprobs)
            .map(|t| logprob(logprobs::chat(&self.setup.tokenizer, t)));
        let status = match step.finish {
            Some(FinishReason::Length) => Status::Incomplete,
            _ => Status::Completed,
        };
        let mut out = Vec::new();
        for piece in step.pieces {
            out.extend(self.piece(piece, &mut lp, status));
        }
        self.pending.extend(lp);
        if let Some(reason) = step.finish {
            out.extend(self.call_end(status));
            out.extend(self.close_message(status));
            self.finish = Some(reason);
        }
        out
    }
}

impl Endpoint for ResponsesStream {
    type Chunk = ResponseEvent;
    type Body = ResponseObject;

    fn start(&mut self) -> Vec<ResponseEvent> {
        let created = self.snapshot(Status::InProgress);
        let progress = created.clone();
        vec![
            self.event(EventKind::Created { response: created }),
            self.event(EventKind::InProgress { response: progress }),
        ]
    }

    fn on(&mut self, _source: usize, event: Event) -> Result<Vec<ResponseEvent>, StreamError> {
        if self.text.is_done() {
            return Ok(Vec::new());
        }
        let (step, token) = match event {
            Event::PromptScores { .. } => return Ok(Vec::new()),
            Event::Failed { error, .. } => return Err(StreamError::Failed(error)),
            Event::Token { token, .. } => (self.usage.token(&mut self.text, token.id), Some(token)),
            Event::Finished { finish, .. } => (self.usage.finish(&mut self.text, finish)?, None),
        };
        Ok(self.step(step, token.as_ref()))
    }

    fn is_finished(&self) -> bool {
        self.text.is_done()
    }

    fn end(&mut self) -> Vec<ResponseEvent> {
        let kind = match self.finish {
            Some(FinishReason::Length) if self.setup.generate => EventKind::Incomplete {
                response: self.snapshot(Status::Incomplete),
            },
            _ => EventKind::Completed {
                response: self.snapshot(Status::Completed),
            },
        };
        vec![self.event(kind)]
    }

    fn failed(&mut self, error: &ApiError) -> Vec<ResponseEvent> {
        let mut response = self.snapshot(Status::Failed);
        response.error = Some(ResponseError {
            code: "server_error",
            message: error.to_string(),
        });
        vec![self.event(EventKind::Failed { response })]
    }

    fn fold(&self, chunks: Vec<ResponseEvent>) -> ResponseObject {
        match chunks.iter().rev().find_map(ResponseEvent::response) {
            Some(r) => r.clone(),
            None => *self.snapshot(Status::Failed),
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
