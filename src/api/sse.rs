//! Pure encoders: per-choice [`Out`] items -> OpenAI chunk JSON (chat and legacy completions).
//! No I/O; `mod.rs` writes what they return as SSE `data:` lines.

use std::sync::Arc;

use serde_json::Value as Json;

use super::generate::{Out, TokenInfo};
use super::openai::*;
use super::tool_parse::ParsedCall;
use crate::tokenizer::Tokenizer;

/// Id, timestamps and names shared by a response's chunks.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub fingerprint: String,
}

/// Turns outs into chunks.
pub trait ChunkEncoder: Send + 'static {
    /// Chunks before any token (the role chunks).
    fn start(&mut self) -> Vec<Json>;
    fn on(&mut self, out: Out) -> Vec<Json>;
    /// Chunks after every choice finished (the usage chunk).
    fn end(&mut self) -> Vec<Json>;
}

/// Usage summed over choices.
#[derive(Debug, Clone, Default)]
pub struct UsageAcc {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

impl UsageAcc {
    pub fn add(&mut self, out: &Out) {
        if let Out::Finish {
            completion_tokens,
            cached_tokens,
            ..
        } = out
        {
            self.completion_tokens += completion_tokens;
            self.cached_tokens = self.cached_tokens.max(*cached_tokens);
        }
    }
    pub fn body(&self) -> UsageBody {
        UsageBody::new(
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
        )
    }
}

fn token_text(tok: Option<&Tokenizer>, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.map(|t| t.token_bytes(id).to_vec()).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat-shape logprobs of `tokens`.
pub fn chat_logprobs(tok: Option<&Tokenizer>, tokens: &[TokenInfo]) -> ChatLogprobs {
    let content = tokens
        .iter()
        .map(|t| {
            let (token, bytes) = token_text(tok, t.id);
            let top_logprobs = t
                .top
                .iter()
                .map(|a| {
                    let (token, bytes) = token_text(tok, a.id);
                    TopLogprobBody {
                        token,
                        logprob: a.logprob,
                        bytes,
                    }
                })
                .collect();
            ChatLogprobBody {
                token,
                logprob: t.logprob.unwrap_or(0.0),
                bytes,
                top_logprobs,
            }
        })
        .collect();
    ChatLogprobs { content }
}

/// Appends legacy-shape logprobs of `tokens`; `offset` is the text offset of the first. A token
/// without a logprob (a prompt's first) gets `null` for it and for its alternatives.
pub fn completion_logprobs(
    tok: Option<&Tokenizer>,
    tokens: &[TokenInfo],
    mut offset: usize,
    into: &mut CompletionLogprobs,
) {
    for t in tokens {
        let (text, _) = token_text(tok, t.id);
        let top = t
            .top
            .iter()
            .map(|a| (token_text(tok, a.id).0, Json::from(a.logprob)))
            .collect();
        into.tokens.push(text.clone());
        into.token_logprobs.push(t.logprob);
        into.top_logprobs.push(t.logprob.map(|_| top));
        into.text_offset.push(offset);
        offset += text.len();
    }
}

/// The two deltas of one complete call, as OpenAI streams a call: first `id`, `type`, the name
/// and arguments `""`; then the arguments.
pub fn tool_call_deltas(index: usize, call: usize, parsed: ParsedCall) -> Vec<ChatChunkChoice> {
    let head = ToolCallDelta {
        index: call,
        id: Some(parsed.id),
        kind: Some("function"),
        function: FunctionDelta {
            name: Some(parsed.name),
            arguments: String::new(),
        },
    };
    let args = ToolCallDelta {
        index: call,
        id: None,
        kind: None,
        function: FunctionDelta {
            name: None,
            arguments: parsed.arguments,
        },
    };
    [head, args]
        .into_iter()
        .map(|d| ChatChunkChoice {
            index,
            delta: Delta {
                tool_calls: Some(vec![d]),
                ..Delta::default()
            },
            logprobs: None,
            finish_reason: None,
        })
        .collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Streaming chat chunks.
pub struct ChatEncoder {
    pub meta: Meta,
    pub n: usize,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub logprobs: bool,
    pub include_usage: bool,
    pub usage: UsageAcc,
}

impl ChatEncoder {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<UsageBody>) -> Json {
        to_json(&ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.fingerprint.clone(),
            choices,
            usage,
        })
    }
}

impl ChunkEncoder for ChatEncoder {
    fn start(&mut self) -> Vec<Json> {
        (0..self.n)
            .map(|index| {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    tool_calls: None,
                };
                let choice = ChatChunkChoice {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: None,
                };
                self.chunk(vec![choice], None)
            })
            .collect()
    }

    fn on(&mut self, out: Out) -> Vec<Json> {
        self.usage.add(&out);
        let choice = match out {
            Out::Delta {
                index,
                text,
                tokens,
            } => {
                let logprobs = self
                    .logprobs
                    .then(|| chat_logprobs(self.tokenizer.as_deref(), &tokens));
                if text.is_empty() && logprobs.is_none() {
                    return Vec::new();
                }
                ChatChunkChoice {
                    index,
                    delta: Delta {
                        content: Some(text),
                        ..Delta::default()
                    },
                    logprobs,
                    finish_reason: None,
                }
            }
            Out::ToolCall {
                index,
                call,
                parsed,
            } => {
                return tool_call_deltas(index, call, parsed)
                    .into_iter()
                    .map(|d| self.chunk(vec![d], None))
                    .collect()
            }
            Out::Finish { index, reason, .. } => ChatChunkChoice {
                index,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(reason.to_string()),
            },
            Out::Prompt { .. } | Out::Error(_) => return Vec::new(),
        };
        vec![self.chunk(vec![choice], None)]
    }

    fn end(&mut self) -> Vec<Json> {
        match self.include_usage {
            true => vec![self.chunk(Vec::new(), Some(self.usage.body()))],
            false => Vec::new(),
        }
    }
}

/// Streaming legacy completion chunks.
pub struct CompletionEncoder {
    pub meta: Meta,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub logprobs: bool,
    pub include_usage: bool,
    pub usage: UsageAcc,
    /// Per choice: the echoed prompt, sent first (with logprobs: once the prompt's scores
    /// arrive, in the same chunk).
    pub echo: Vec<Option<String>>,
    /// Per choice: text offset so far.
    pub offsets: Vec<usize>,
}

impl CompletionEncoder {
    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<UsageBody>) -> Json {
        to_json(&Completion {
            id: self.meta.id.clone(),
            object: "text_completion",
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.fingerprint.clone(),
            choices,
            usage,
        })
    }
}

impl ChunkEncoder for CompletionEncoder {
    fn start(&mut self) -> Vec<Json> {
        if self.logprobs {
            return Vec::new(); // the echo waits for `Out::Prompt`
        }
        let echoes: Vec<(usize, String)> = self
            .echo
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.clone().map(|e| (i, e)))
            .collect();
        echoes
            .into_iter()
            .map(|(index, text)| {
                if let Some(o) = self.offsets.get_mut(index) {
                    *o += text.len();
                }
                let choice = CompletionChoice {
                    index,
                    text,
                    logprobs: None,
                    finish_reason: None,
                };
                self.chunk(vec![choice], None)
            })
            .collect()
    }

    fn on(&mut self, out: Out) -> Vec<Json> {
        self.usage.add(&out);
        let choice = match out {
            Out::Prompt { index, tokens } => {
                let Some(text) = self.echo.get(index).cloned().flatten() else {
                    return Vec::new();
                };
                if !self.logprobs {
                    return Vec::new(); // echoed at the start
                }
                let mut lp = CompletionLogprobs::default();
                completion_logprobs(self.tokenizer.as_deref(), &tokens, 0, &mut lp);
                if let Some(o) = self.offsets.get_mut(index) {
                    *o += text.len();
                }
                CompletionChoice {
                    index,
                    text,
                    logprobs: Some(lp),
                    finish_reason: None,
                }
            }
            Out::Delta {
                index,
                text,
                tokens,
            } => {
                let offset = self.offsets.get(index).copied().unwrap_or(0);
                let logprobs = self.logprobs.then(|| {
                    let mut lp = CompletionLogprobs::default();
                    completion_logprobs(self.tokenizer.as_deref(), &tokens, offset, &mut lp);
                    lp
                });
                if let Some(o) = self.offsets.get_mut(index) {
                    *o += text.len();
                }
                if text.is_empty() && logprobs.is_none() {
                    return Vec::new();
                }
                CompletionChoice {
                    index,
                    text,
                    logprobs,
                    finish_reason: None,
                }
            }
            Out::ToolCall { .. } => return Vec::new(),
            Out::Finish { index, reason, .. } => CompletionChoice {
                index,
                text: String::new(),
                logprobs: None,
                finish_reason: Some(reason.to_string()),
            },
            Out::Error(_) => return Vec::new(),
        };
        vec![self.chunk(vec![choice], None)]
    }

    fn end(&mut self) -> Vec<Json> {
        match self.include_usage {
            true => vec![self.chunk(Vec::new(), Some(self.usage.body()))],
            false => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_chunks_run_role_content_finish_usage() {
        let mut enc = ChatEncoder {
            meta: Meta {
                id: "c".into(),
                created: 1,
                model: "m".into(),
                fingerprint: "fp".into(),
            },
            n: 1,
            tokenizer: None,
            logprobs: false,
            include_usage: true,
            usage: UsageAcc {
                prompt_tokens: 3,
                ..UsageAcc::default()
            },
        };
        let mut chunks = enc.start();
        chunks.extend(enc.on(Out::Delta {
            index: 0,
            text: "hi".into(),
            tokens: vec![],
        }));
        chunks.extend(enc.on(Out::Finish {
            index: 0,
            reason: "length",
            completion_tokens: 2,
            cached_tokens: 1,
        }));
        chunks.extend(enc.end());
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "hi");
        assert!(chunks[1]["choices"][0]["finish_reason"].is_null());
        assert_eq!(chunks[2]["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
        assert!(chunks[2]["usage"].is_null());
        assert_eq!(chunks[3]["choices"], serde_json::json!([]));
        assert_eq!(chunks[3]["usage"]["total_tokens"], 5);
        assert_eq!(
            chunks[3]["usage"]["prompt_tokens_details"]["cached_tokens"],
            1
        );
    }

    #[test]
    fn a_tool_call_streams_as_a_named_head_then_its_arguments() {
        let mut enc = ChatEncoder {
            meta: Meta {
                id: "c".into(),
                created: 1,
                model: "m".into(),
                fingerprint: "fp".into(),
            },
            n: 2,
            tokenizer: None,
            logprobs: false,
            include_usage: false,
            usage: UsageAcc::default(),
        };
        let call = |call, name: &str, args: &str| Out::ToolCall {
            index: 1,
            call,
            parsed: ParsedCall {
                id: format!("call_{name}"),
                name: name.into(),
                arguments: args.into(),
            },
        };
        let mut chunks = enc.on(call(0, "f", r#"{"x":1}"#));
        chunks.extend(enc.on(call(1, "g", "{}")));
        chunks.extend(enc.on(Out::Finish {
            index: 1,
            reason: "tool_calls",
            completion_tokens: 9,
            cached_tokens: 0,
        }));
        let deltas: Vec<&Json> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(chunks.len(), 5);
        assert!(chunks.iter().all(|c| c["choices"][0]["index"] == 1));
        assert_eq!(
            *deltas[0],
            serde_json::json!({"tool_calls": [{"index": 0, "id": "call_f", "type": "function",
                "function": {"name": "f", "arguments": ""}}]})
        );
        assert_eq!(
            *deltas[1],
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":1}"}}]})
        );
        assert_eq!(deltas[2]["tool_calls"][0]["index"], 1);
        assert_eq!(deltas[2]["tool_calls"][0]["function"]["name"], "g");
        assert!(deltas[0].get("content").is_none());
        assert_eq!(*deltas[4], serde_json::json!({}));
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert!(chunks[..4]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()));
    }
}
