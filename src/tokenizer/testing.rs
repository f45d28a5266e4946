//! A tokenizer and a chat template built in code, for tests: [`byte_level`] gives a model of any
//! vocabulary size (the tiny random Llamas of `model::testing` have 96 ids) a tokenizer, and
//! [`chatml_template`] a ChatML template, so that the text routes (completions with a text
//! prompt, chat, tokenize) can run on such a model without a model file.
//!
//! Plain CPU work, built by the test that calls it; nothing here reads a file or the network.
//! The GGUF-shaped fixtures the unit tests of this module's parts use are here too, under
//! `cfg(test)`.

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::AddedToken;

use super::{ChatTemplate, Parts, Tokenizer};

/// Ids 0, 1, 2: special (control) tokens, as SmolLM2 numbers them.
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The first id after the special tokens and the newline: `' '`, then printable ASCII in order.
const FIRST_PRINTABLE: usize = SPECIALS.len() + 1;

/// A ChatML template: each message as `<|im_start|>{role}\n{content}<|im_end|>\n`, then
/// `<|im_start|>assistant\n` when the generation prompt is asked for.
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n\
    {{ message['content'] }}<|im_end|>\n{% endfor %}\
    {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The text of each id of [`byte_level`]`(vocab)`.
fn byte_level_tokens(vocab: usize) -> Vec<String> {
    let chars = std::iter::once('\n').chain(' '..='~').map(String::from);
    let reserved = (SPECIALS.len() + 1 + 95..).map(|id| format!("<|reserved_{id}|>"));
    SPECIALS
        .iter()
        .map(|s| s.to_string())
        .chain(chars)
        .chain(reserved)
        .take(vocab)
        .collect()
}

/// A tokenizer of exactly `vocab` ids, one char per token, for models built in code:
///
/// - ids 0, 1, 2: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, special (control) tokens; eos
///   is `<|im_end|>` (so [`Tokenizer::stop_token_ids`] is `[2, 0]`), bos `<|im_start|>`,
///   never prepended (as SmolLM2 declares them). Their text parses to their id with
///   `parse_special` on, and is tokenized char by char with it off;
/// - id 3: `'\n'` (chat templates write newlines);
/// - ids 4.. : the printable ASCII chars in order, `' '` (id 4) to `'~'` (id 98), as many as
///   fit: with 96 ids (the tiny model) `' '` to `'{'`, so `|`, `}` and `~` are outside;
/// - ids 99.. (when `vocab` > 99): special tokens `<|reserved_{id}|>`.
///
/// Every id below `vocab` decodes (to its char or its text). A char outside the vocabulary
/// (non-ASCII, a control char other than `'\n'`, or a printable one past the last id) is not
/// dropped or replaced: encoding the text fails with [`super::TokenizerError::Encode`].
///
/// # Panics
/// When `vocab` < 5: the special tokens, the newline and the space are the least it holds.
pub fn byte_level(vocab: usize) -> Tokenizer {
    assert!(
        vocab > FIRST_PRINTABLE,
        "byte_level({vocab}): needs at least {} ids (3 special tokens, '\\n', ' ')",
        FIRST_PRINTABLE + 1
    );
    let tokens = byte_level_tokens(vocab);
    let ids: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, text)| (text.clone(), id as u32))
        .collect();
    let last = tokens[tokens.len().min(FIRST_PRINTABLE + 95) - 1].clone();
    // `tokenizers`' BPE fails on an unknown char whose unk token is not in the vocabulary;
    // this one never is, and names the vocabulary in the error.
    let outside = format!("<a char outside byte_level({vocab}): only '\\n' and ' '..='{last}'>");
    let bpe = BPE::builder()
        .vocab_and_merges(ids, Vec::new())
        .unk_token(outside)
        .build()
        .expect("invariant: a BPE over single chars with no merges builds");
    let mut hf = tokenizers::Tokenizer::new(bpe);
    let special = |id: usize| id < SPECIALS.len() || id >= FIRST_PRINTABLE + 95;
    let added = (0..vocab)
        .filter(|&id| special(id))
        .map(|id| AddedToken::from(tokens[id].clone(), true).normalized(false));
    hf.add_tokens(added)
        .expect("invariant: the special tokens are in the vocabulary");
    let named = |id: u32| Some((id, tokens[id as usize].clone()));
    Tokenizer::assemble(Parts {
        hf,
        token_bytes: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
        special: (0..vocab).map(special).collect(),
        bos: named(1),
        eos: named(2),
        extra_stops: Vec::new(),
        add_bos: false,
        strip_leading_space: false,
    })
}

/// A minimal ChatML template (`<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
/// `<|im_start|>assistant\n` with the generation prompt), bos `<|im_start|>` and eos
/// `<|im_end|>` as [`byte_level`] declares them. It renders no system prompt of its own and
/// no tools.
pub fn chatml_template() -> ChatTemplate {
    ChatTemplate::new(CHATML, SPECIALS[1], SPECIALS[2])
        .expect("invariant: the ChatML template compiles")
}

#[cfg(test)]
pub(crate) use gguf_fixtures::{bytes_only_gpt2, content, small_spm, small_spm_content, strings};

#[cfg(test)]
mod gguf_fixtures {
    //! Tiny tokenizers built from GGUF metadata in code, for the unit tests of this module's
    //! parts.

    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

    use super::super::Tokenizer;

    /// A GGUF `Content` holding only the given metadata.
    pub(crate) fn content(metadata: Vec<(&str, Value)>) -> Content {
        Content {
            magic: VersionedMagic::GgufV3,
            metadata: metadata
                .into_iter()
                .map(|(key, value)| (key.to_string(), value))
                .collect(),
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    pub(crate) fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    /// Byte-level BPE over the 256 single-byte tokens (ids 3..259) with no merges, so every
    /// multi-byte char is split across tokens. Ids 0–2: `<|endoftext|>`, `<|im_start|>`,
    /// `<|im_end|>` (control).
    pub(crate) fn bytes_only_gpt2() -> Tokenizer {
        let mut tokens = vec![
            "<|endoftext|>".to_string(),
            "<|im_start|>".to_string(),
            "<|im_end|>".to_string(),
        ];
        tokens.extend((0..=255u8).map(|b| super::super::bytes::byte_to_char(b).to_string()));
        let mut types = vec![Value::I32(3); 3];
        types.extend(std::iter::repeat_n(Value::I32(1), 256));
        let content = content(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("default".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", Value::Array(vec![])),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ]);
        Tokenizer::from_gguf(&content).expect("byte-only gpt2 tokenizer builds")
    }

    /// SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then a few
    /// pieces whose score-derived merges spell `▁Hello` and `▁world`.
    pub(crate) fn small_spm_content() -> Content {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(Value::I32(6));
        }
        let pieces = [
            "▁", "H", "e", "l", "o", "w", "r", "d", "He", "ll", "llo", "Hello", "▁Hello", "or",
            "ld", "wor", "world", "▁world",
        ];
        for piece in pieces {
            tokens.push(piece.to_string());
            types.push(Value::I32(1));
        }
        let scores = (0..tokens.len())
            .map(|id| Value::F32(-(id as f32)))
            .collect();
        content(vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ])
    }

    pub(crate) fn small_spm() -> Tokenizer {
        Tokenizer::from_gguf(&small_spm_content()).expect("small spm tokenizer builds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{render_prompt, TokenizerError};
    use serde_json::json;

    /// The vocabulary of the tiny random Llamas of `model::testing` (a layer above this one,
    /// so the number is written here; the integration tests run the two together).
    const TINY_VOCAB: usize = 96;

    /// Every char the 96-id vocabulary holds: `'\n'` and `' '`..=`'{'`.
    fn tiny_alphabet() -> String {
        std::iter::once('\n').chain(' '..='{').collect()
    }

    #[test]
    fn fits_the_tiny_model_and_every_id_decodes() {
        let vocab = TINY_VOCAB;
        for n in [5, vocab, 99, 120] {
            let tok = byte_level(n);
            assert_eq!(tok.vocab_size(), n);
            for id in 0..n as u32 {
                assert!(!tok.token_bytes(id).is_empty(), "id {id} of {n}");
                assert_eq!(tok.decode(&[id], false).as_bytes(), tok.token_bytes(id));
            }
            assert!(tok.token_bytes(n as u32).is_empty());
            assert_eq!(tok.eos_token(), Some((2, "<|im_end|>")));
            assert_eq!(tok.stop_token_ids(), [2, 0]);
            assert!(!tok.add_bos());
        }
        let tok = byte_level(vocab);
        assert_eq!(tok.token_bytes(3), b"\n");
        assert_eq!(tok.token_bytes(4), b" ");
        assert_eq!(tok.token_bytes(95), b"{");
        let wide = byte_level(120);
        assert_eq!(wide.token_bytes(98), b"~");
        assert_eq!(wide.token_bytes(99), b"<|reserved_99|>");
        assert!(wide.is_special(99) && !wide.is_special(98));
    }

    #[test]
    fn ascii_round_trips_one_id_per_char_below_the_vocabulary() {
        let vocab = TINY_VOCAB;
        let tok = byte_level(vocab);
        let text = tiny_alphabet() + "Hello, world!\n";
        for parse_special in [true, false] {
            let ids = tok.encode(&text, parse_special).expect("encodes");
            assert_eq!(ids.len(), text.len());
            assert!(ids.iter().all(|&id| (id as usize) < vocab), "{ids:?}");
            assert_eq!(tok.decode(&ids, false), text);
            assert_eq!(tok.encode_prompt(&text, parse_special).expect("ok"), ids);
        }
        let all: String = std::iter::once('\n').chain(' '..='~').collect();
        let wide = byte_level(99);
        assert_eq!(
            wide.decode(&wide.encode(&all, false).expect("ok"), false),
            all
        );
    }

    #[test]
    fn special_tokens_parse_only_with_parse_special() {
        let tok = byte_level(99);
        let text = "<|im_start|>user\nHi<|im_end|>\n<|endoftext|>";
        let ids = tok.encode(text, true).expect("encodes");
        assert_eq!(ids[..2], [1, 4 + u32::from(b'u' - b' ')]);
        assert_eq!(
            ids.iter().filter(|&&id| id < 3).collect::<Vec<_>>(),
            [&1, &2, &0]
        );
        assert_eq!(tok.decode(&ids, false), text);
        assert_eq!(tok.decode(&ids, true), "user\nHi\n");
        let plain = tok.encode(text, false).expect("encodes");
        assert_eq!(plain.len(), text.len());
        assert!(plain.iter().all(|&id| !tok.is_special(id)), "{plain:?}");
        assert_eq!(tok.decode(&plain, false), text);
    }

    #[test]
    fn a_char_outside_the_vocabulary_is_an_encode_error() {
        let tok = byte_level(96);
        for text in ["café", "a~b", "tab\there", "<|im_end|>"] {
            let err = tok.encode(text, false).expect_err(text);
            assert!(matches!(err, TokenizerError::Encode { .. }), "{err:?}");
            assert!(err.to_string().contains("outside byte_level(96)"), "{err}");
        }
        // Special-token text needs no `|` in the vocabulary when it is parsed.
        assert_eq!(tok.encode("<|im_end|>", true).expect("parses"), [2]);
    }

    #[test]
    fn the_chatml_template_renders_a_chat_the_tiny_vocabulary_encodes() {
        let tok = byte_level(96);
        let messages = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Hi"}),
        ];
        let prompt = render_prompt(&chatml_template(), &tok, &messages, None).expect("renders");
        assert_eq!(
            prompt.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(prompt.ids.iter().filter(|&&id| id == 1).count(), 3);
        assert_eq!(prompt.ids.iter().filter(|&&id| id == 2).count(), 2);
        assert_eq!(tok.decode(&prompt.ids, false), prompt.text);
        let without = chatml_template()
            .render(&messages[1..], None, false)
            .expect("renders");
        assert_eq!(without, "<|im_start|>user\nHi<|im_end|>\n");
    }
}
