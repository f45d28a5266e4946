//! Engine tokens with their logprobs -> the two OpenAI shapes: chat's `logprobs.content` and
//! legacy completions' four parallel lists. Token text is the token's own bytes (lossy UTF-8
//! for a token that is part of a character), as OpenAI reports it.

use serde_json::Value as Json;

use super::openai::{ChatLogprobBody, CompletionLogprobs, TopLogprobBody};
use crate::engine::Token;
use crate::tokenizer::Tokenizer;

/// The least logprob sent, as vLLM and OpenAI send it. A token the output grammar masks has
/// logprob -inf, which JSON cannot carry: serde writes a non-finite float as `null`, where
/// clients expect a number.
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// `lp` as it goes on the wire: at least [`LOGPROB_FLOOR`] (NaN too).
fn wire(lp: f32) -> f32 {
    if lp >= LOGPROB_FLOOR {
        lp
    } else {
        LOGPROB_FLOOR
    }
}

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
                logprob: wire(a.logprob),
                bytes,
            }
        })
        .collect();
    ChatLogprobBody {
        token,
        logprob: wire(t.logprob.unwrap_or(0.0)),
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
            .map(|a| (token_text(tok, a.id).0, Json::from(wire(a.logprob))))
            .collect();
        out.tokens.push(text.clone());
        out.token_logprobs.push(t.logprob.map(wire));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::TokenLogprob;
    use crate::tokenizer::testing::byte_level;

    /// Regression: a token masked by the output grammar has logprob -inf among the top
    /// alternatives, which went out as `"logprob": null` (serde's JSON of a non-finite float)
    /// and broke clients that read a number.
    #[test]
    fn masked_alternatives_go_out_as_the_floor_not_null() {
        let tok = byte_level(96);
        let t = Token {
            id: 40,
            logprob: Some(0.0),
            top: vec![
                TokenLogprob {
                    id: 40,
                    logprob: 0.0,
                },
                TokenLogprob {
                    id: 41,
                    logprob: f32::NEG_INFINITY,
                },
                TokenLogprob {
                    id: 42,
                    logprob: f32::NAN,
                },
            ],
        };
        let chat = serde_json::to_value(chat(&tok, &t)).expect("serializes");
        let tops: Vec<_> = chat["top_logprobs"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|a| a["logprob"].as_f64())
            .collect();
        assert_eq!(tops, [Some(0.0), Some(-9999.0), Some(-9999.0)]);
        let legacy = serde_json::to_value(completion(&tok, &[t], 0)).expect("serializes");
        let top = legacy["top_logprobs"][0].as_object().expect("a map");
        assert!(top.values().all(|v| v.is_number()), "{top:?}");
        assert_eq!(legacy["token_logprobs"][0], 0.0);
    }
}
