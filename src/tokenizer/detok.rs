//! Streaming detokenizer: token ids in, UTF-8 text out, one token at a time. Owned by one
//! choice's text stage in the API (`api::choice_text`); it never guesses at word boundaries,
//! it only holds back the bytes of a char that a later token has yet to complete.
//!
//! The output of `push`* + `flush` is exactly [`Tokenizer::decode`] of the same ids: both are
//! the lossy UTF-8 reading of the concatenated token bytes.

use std::sync::Arc;

use super::Tokenizer;

/// Incremental decoder over [`Tokenizer::token_bytes`].
#[derive(Debug)]
pub struct IncrementalDecoder {
    tokenizer: Arc<Tokenizer>,
    skip_special: bool,
    /// Bytes of an incomplete char at the end of what was pushed (at most 3).
    pending: Vec<u8>,
    /// No byte has been emitted or held yet (SentencePiece drops the first leading space).
    at_start: bool,
}

impl IncrementalDecoder {
    pub fn new(tokenizer: Arc<Tokenizer>, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Text completed by this token: never half a UTF-8 char, never loses bytes. Bytes that
    /// can never become valid UTF-8 come out as U+FFFD at once rather than being held.
    pub fn push(&mut self, id: u32) -> String {
        if self.skip_special && self.tokenizer.is_special(id) {
            return String::new();
        }
        let mut bytes = self.tokenizer.token_bytes(id);
        if bytes.is_empty() {
            return String::new();
        }
        if std::mem::take(&mut self.at_start) && self.tokenizer.strip_leading_space {
            bytes = bytes.strip_prefix(b" ").unwrap_or(bytes);
        }
        self.pending.extend_from_slice(bytes);
        self.take_complete()
    }

    /// Whatever bytes remain, lossy (an unfinished char becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    /// Emits the longest prefix of `pending` that a later byte cannot change, the way
    /// `String::from_utf8_lossy` would read it; keeps an incomplete trailing char.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    out.push_str(
                        std::str::from_utf8(valid).expect("invariant: prefix up to valid_up_to"),
                    );
                    match err.error_len() {
                        // An invalid sequence: no later byte can repair it.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[len..];
                        }
                        // A char cut short by the end of input: wait for the next token.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let held = rest.len();
        self.pending.drain(..self.pending.len() - held);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bytes_only_gpt2, small_spm};
    use super::*;

    fn stream(tokenizer: &Arc<Tokenizer>, ids: &[u32], skip_special: bool) -> Vec<String> {
        let mut decoder = IncrementalDecoder::new(Arc::clone(tokenizer), skip_special);
        let mut pieces: Vec<String> = ids.iter().map(|id| decoder.push(*id)).collect();
        pieces.push(decoder.flush());
        pieces
    }

    #[test]
    fn chars_split_across_byte_tokens_come_out_whole() {
        let tokenizer = Arc::new(bytes_only_gpt2());
        for text in ["héllo", "你好，世界", "👨‍👩‍👧 family", "🇫🇷🧑🏽‍💻", "a\u{0301}"]
        {
            let ids = tokenizer.encode(text, true).expect("encodes");
            assert_eq!(ids.len(), text.len(), "one token per byte");
            let pieces = stream(&tokenizer, &ids, false);
            assert!(
                pieces.iter().all(|piece| !piece.contains('\u{FFFD}')),
                "{pieces:?}"
            );
            assert_eq!(pieces.concat(), text);
            assert_eq!(tokenizer.decode(&ids, false), text);
            // The first byte of a 4-byte emoji is held until the char is complete.
            if text.starts_with('👨') {
                assert_eq!(&pieces[..4], ["", "", "", "👨"]);
            }
        }
    }

    #[test]
    fn invalid_bytes_are_emitted_lossily_not_held() {
        let tokenizer = Arc::new(bytes_only_gpt2());
        // Ids 3.. are the bytes 0..=255.
        let byte = |b: u8| 3 + u32::from(b);
        let mut decoder = IncrementalDecoder::new(Arc::clone(&tokenizer), false);
        assert_eq!(decoder.push(byte(0xFF)), "\u{FFFD}");
        assert_eq!(decoder.push(byte(0xE4)), "");
        assert_eq!(decoder.push(byte(b'A')), "\u{FFFD}A");
        assert_eq!(decoder.push(byte(0xE4)), "");
        assert_eq!(decoder.push(byte(0xB8)), "");
        assert_eq!(decoder.flush(), "\u{FFFD}");
        assert_eq!(decoder.flush(), "");
        let ids = [byte(0xFF), byte(0xE4), byte(b'A'), byte(0xE4), byte(0xB8)];
        assert_eq!(
            stream(&tokenizer, &ids, false).concat(),
            tokenizer.decode(&ids, false)
        );
    }

    #[test]
    fn special_tokens_are_skipped_only_when_asked() {
        let tokenizer = Arc::new(bytes_only_gpt2());
        let ids = tokenizer
            .encode("<|im_start|>hi<|im_end|>", true)
            .expect("encodes");
        assert_eq!(ids[0], 1);
        assert_eq!(stream(&tokenizer, &ids, true).concat(), "hi");
        assert_eq!(
            stream(&tokenizer, &ids, false).concat(),
            "<|im_start|>hi<|im_end|>"
        );
        assert_eq!(tokenizer.decode(&ids, true), "hi");
    }

    #[test]
    fn sentencepiece_drops_only_the_first_leading_space() {
        let tokenizer = Arc::new(small_spm());
        let ids = tokenizer
            .encode("Hello world Hello", true)
            .expect("encodes");
        let pieces = stream(&tokenizer, &ids, false);
        assert_eq!(pieces, ["Hello", " world", " Hello", ""]);
        let with_bos = tokenizer.encode_prompt("Hello", true).expect("encodes");
        assert_eq!(stream(&tokenizer, &with_bos, true).concat(), "Hello");
        assert_eq!(stream(&tokenizer, &with_bos, false).concat(), "<s> Hello");
    }
}
