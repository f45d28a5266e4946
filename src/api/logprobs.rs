//! Engine tokens with their logprobs -> the two OpenAI shapes: chat's `logprobs.content` and
//! legacy completions' four parallel lists. Token text is the token's own bytes (lossy UTF-8
//! for a token that is part of a character), as OpenAI reports it.

use serde_json::Value as Json;

use super::openai::{ChatLogprobBody, CompletionLogprobs, TopLogprobBody};
use crate::engine::Token;
use crate::tokenizer::Tokenizer;

fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_bytes(id).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat-shape logprobs of one token.
pub fn chat(tok: &Tokenizer, t: &Token) -> ChatLogprobBody {
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
}

/// Legacy-shape logprobs of `tokens`; `offset` is the text offset of the first. A token
/// without a logprob (a prompt's first) gets `null` for it and for its alternatives.
pub fn completion(tok: &Tokenizer, tokens: &[Token], mut offset: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in tokens {
        let (text, _) = token_text(tok, t.id);
        let top = t
            .top
            .iter()
            .map(|a| (token_text(tok, a.id).0, Json::from(a.logprob)))
            .collect();
        out.tokens.push(text.clone());
        out.token_logprobs.push(t.logprob);
        out.top_logprobs.push(t.logprob.map(|_| top));
        out.text_offset.push(offset);
        offset += text.len();
    }
    out
}

/// Appends `more` to `into` (a fold of streamed chunks).
pub fn extend(into: &mut CompletionLogprobs, more: CompletionLogprobs) {
    into.tokens.extend(more.tokens);
    into.token_logprobs.extend(more.token_logprobs);
    into.top_logprobs.extend(more.top_logprobs);
    into.text_offset.extend(more.text_offset);
}
