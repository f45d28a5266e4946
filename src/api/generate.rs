//! Runs one engine request on its own tokio task: reads the `EventStream`, scans stop strings,
//! and forwards per-choice [`Out`] items on an unbounded channel. The worker never waits on a
//! client: the engine's channel is unbounded and this task only reads it. When the handler (or
//! the SSE body) goes away, the next send fails and the task drops the stream, which cancels
//! the request in the engine. It also watches its channel: when the receiver goes away (the
//! client disconnected while nothing was being written: queued, or in a long prefill), it
//! returns at once instead of at the next token. A stop string found here also drops the
//! stream.

use tokio::sync::mpsc;

use super::stop::{Scan, StopScanner};
use crate::engine::sampling::TokenLogprob;
use crate::engine::{Event, EventStream};

/// One generated token, for logprobs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub id: u32,
    pub logprob: Option<f32>,
    pub top: Vec<TokenLogprob>,
}

/// What a choice produced. `index` is the response's choice index.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// The prompt's tokens, scored (`echo` with logprobs): first token's logprob `None`.
    /// Comes before the choice's first delta.
    Prompt {
        index: usize,
        tokens: Vec<TokenInfo>,
    },
    Delta {
        index: usize,
        text: String,
        tokens: Vec<TokenInfo>,
    },
    Finish {
        index: usize,
        reason: &'static str,
        completion_tokens: usize,
        cached_tokens: usize,
    },
    Error(String),
}

/// Choices of one engine request, numbered from `offset`.
pub fn spawn(stream: EventStream, n: usize, offset: usize, stops: Vec<String>) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(stream, n, offset, stops, tx));
    rx
}

pub type Receiver = mpsc::UnboundedReceiver<Out>;

struct Choice {
    scanner: StopScanner,
    generated: usize,
    done: bool,
}

async fn run(
    mut stream: EventStream,
    n: usize,
    offset: usize,
    stops: Vec<String>,
    tx: mpsc::UnboundedSender<Out>,
) {
    let mut choices: Vec<Choice> = (0..n)
        .map(|_| Choice {
            scanner: StopScanner::new(&stops),
            generated: 0,
            done: false,
        })
        .collect();
    let mut open = n;
    loop {
        let ev = tokio::select! {
            ev = stream.recv() => ev,
            // The reader left: return, and dropping `stream` cancels the request now.
            () = tx.closed() => return,
        };
        let Some(ev) = ev else { return };
        let outs = match ev {
            Event::PromptLogprobs { tokens, .. } => {
                // Scored once (choice 0); the prompt is every choice's.
                let tokens: Vec<TokenInfo> = tokens
                    .into_iter()
                    .map(|t| TokenInfo {
                        id: t.id,
                        logprob: t.logprob,
                        top: t.top_logprobs,
                    })
                    .collect();
                (0..n)
                    .map(|i| Out::Prompt {
                        index: i + offset,
                        tokens: tokens.clone(),
                    })
                    .collect()
            }
            Event::Failed { error, .. } => {
                let _ = tx.send(Out::Error(error));
                return;
            }
            Event::Token {
                index,
                id,
                text,
                logprob,
                top_logprobs,
            } => {
                let Some(c) = choices.get_mut(index).filter(|c| !c.done) else {
                    continue;
                };
                c.generated += 1;
                let tok = TokenInfo {
                    id,
                    logprob,
                    top: top_logprobs,
                };
                on_text(c, index + offset, &text, vec![tok], None)
            }
            Event::Finished {
                index,
                reason,
                usage,
                text,
                ..
            } => {
                let Some(c) = choices.get_mut(index).filter(|c| !c.done) else {
                    continue;
                };
                c.generated = usage.completion_tokens;
                let fin = (reason.as_str(), usage.cached_tokens);
                on_text(c, index + offset, &text, Vec::new(), Some(fin))
            }
        };
        for out in outs {
            if matches!(out, Out::Finish { .. }) {
                open -= 1;
            }
            if tx.send(out).is_err() {
                return; // the client went away: dropping `stream` cancels
            }
        }
        if open == 0 {
            return;
        }
    }
}

/// The outs for `text` arriving on choice `c`; `finish` when the engine finished it.
fn on_text(
    c: &mut Choice,
    index: usize,
    text: &str,
    tokens: Vec<TokenInfo>,
    finish: Option<(&'static str, usize)>,
) -> Vec<Out> {
    let (mut emit, stopped) = match c.scanner.push(text) {
        Scan::Emit(s) => (s, false),
        Scan::Stopped(s) => (s, true),
    };
    if finish.is_some() && !stopped {
        emit.push_str(&c.scanner.flush());
    }
    let mut outs = Vec::new();
    if !emit.is_empty() || !tokens.is_empty() {
        outs.push(Out::Delta {
            index,
            text: emit,
            tokens,
        });
    }
    let reason = match (stopped, finish) {
        (true, _) => Some(("stop", finish.map_or(0, |f| f.1))),
        (false, Some(f)) => Some(f),
        (false, None) => None,
    };
    if let Some((reason, cached)) = reason {
        c.done = true;
        outs.push(Out::Finish {
            index,
            reason,
            completion_tokens: c.generated,
            cached_tokens: cached,
        });
    }
    outs
}
