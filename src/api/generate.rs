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
use super::tool_parse::{ParsedCall, Piece, ToolCallScanner};
use crate::engine::{Event, EventStream};
use crate::sampling::TokenLogprob;

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
    /// A complete tool call; `call` numbers the choice's calls from 0.
    ToolCall {
        index: usize,
        call: usize,
        parsed: ParsedCall,
    },
    Finish {
        index: usize,
        reason: &'static str,
        completion_tokens: usize,
        cached_tokens: usize,
    },
    Error(String),
}

/// How each choice's text is post-processed.
#[derive(Debug, Clone, Default)]
pub struct TextRules {
    /// Stop strings, excluded from the output.
    pub stops: Vec<String>,
    /// Parse `<tool_call>` blocks calling these functions into [`Out::ToolCall`]s (`None`:
    /// no tools).
    pub tool_names: Option<Vec<String>>,
}

/// Choices of one engine request, numbered from `offset`.
pub fn spawn(stream: EventStream, n: usize, offset: usize, rules: TextRules) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(stream, n, offset, rules, tx));
    rx
}

pub type Receiver = mpsc::UnboundedReceiver<Out>;

struct Choice {
    scanner: StopScanner,
    tools: Option<ToolCallScanner>,
    generated: usize,
    done: bool,
}

async fn run(
    mut stream: EventStream,
    n: usize,
    offset: usize,
    rules: TextRules,
    tx: mpsc::UnboundedSender<Out>,
) {
    let mut choices: Vec<Choice> = (0..n)
        .map(|_| Choice {
            scanner: StopScanner::new(&rules.stops),
            tools: rules.tool_names.clone().map(ToolCallScanner::new),
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
    let ending = stopped || finish.is_some();
    let mut outs = Vec::new();
    let mut tokens = Some(tokens);
    let mut delta = |text: String, outs: &mut Vec<Out>| {
        let tokens = tokens.take().unwrap_or_default();
        if !text.is_empty() || !tokens.is_empty() {
            outs.push(Out::Delta {
                index,
                text,
                tokens,
            });
        }
    };
    match c.tools.as_mut() {
        None => delta(emit, &mut outs),
        Some(sc) => {
            let mut next = sc.calls();
            let mut pieces = sc.push(&emit);
            if ending {
                pieces.extend(sc.finish());
            }
            for p in pieces {
                match p {
                    Piece::Text(t) => delta(t, &mut outs),
                    Piece::Call(parsed) => {
                        outs.push(Out::ToolCall {
                            index,
                            call: next,
                            parsed,
                        });
                        next += 1;
                    }
                }
            }
        }
    }
    delta(String::new(), &mut outs);
    let reason = match (stopped, finish) {
        (true, _) => Some(("stop", finish.map_or(0, |f| f.1))),
        (false, Some(f)) => Some(f),
        (false, None) => None,
    };
    if let Some((mut reason, cached)) = reason {
        if reason == "stop" && c.tools.as_ref().is_some_and(|t| t.calls() > 0) {
            reason = "tool_calls";
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(tool_calls: bool) -> Choice {
        Choice {
            scanner: StopScanner::new(&[]),
            tools: tool_calls.then(|| ToolCallScanner::new(vec!["f".into(), "get_weather".into()])),
            generated: 0,
            done: false,
        }
    }

    fn tok() -> Vec<TokenInfo> {
        vec![TokenInfo {
            id: 1,
            logprob: None,
            top: Vec::new(),
        }]
    }

    #[test]
    fn parsed_calls_become_tool_call_outs_and_finish_with_tool_calls() {
        let mut c = choice(true);
        let mut outs = on_text(&mut c, 0, "<tool_call>\n{\"name\": \"f\", ", tok(), None);
        // The tag is held: only the token (for logprobs) goes out, with no text.
        assert!(matches!(&outs[..], [Out::Delta { text, .. }] if text.is_empty()));
        outs = on_text(&mut c, 0, "\"arguments\": {}}\n</tool_call>", tok(), None);
        outs.extend(on_text(&mut c, 0, "", Vec::new(), Some(("stop", 0))));
        let calls: Vec<_> = outs
            .iter()
            .filter_map(|o| match o {
                Out::ToolCall { call, parsed, .. } => Some((*call, parsed.name.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(calls, [(0, "f")]);
        assert!(matches!(
            outs.last(),
            Some(Out::Finish {
                reason: "tool_calls",
                ..
            })
        ));
    }

    #[test]
    fn length_stays_length_and_text_without_calls_stays_stop() {
        let mut c = choice(true);
        let outs = on_text(&mut c, 0, "<tool_call>{\"na", tok(), Some(("length", 0)));
        assert!(matches!(
            outs.last(),
            Some(Out::Finish {
                reason: "length",
                ..
            })
        ));
        assert!(outs
            .iter()
            .any(|o| matches!(o, Out::Delta { text, .. } if text == "<tool_call>{\"na")));
        let mut c = choice(true);
        let outs = on_text(&mut c, 0, "plain", tok(), Some(("stop", 0)));
        assert!(matches!(
            outs.last(),
            Some(Out::Finish { reason: "stop", .. })
        ));
    }
}
