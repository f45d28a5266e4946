//! Tokenization for the HTTP layer: the [`Tokenizer`] (built from GGUF metadata or loaded from a
//! Hugging Face `tokenizer.json`), the [`ChatTemplate`] that turns OpenAI messages into a prompt,
//! and the [`IncrementalDecoder`] that turns a stream of token ids back into UTF-8-safe text.
//!
//! Everything here is plain CPU work called from request handlers (on `spawn_blocking`) and
//! from the SSE encoder; none of it may ever run on, or block, the engine's model thread.
//! [`Tokenizer`] is immutable after loading and is shared as `Arc<Tokenizer>` across threads.
//!
//! Token bytes are the single source of truth for output text: [`Tokenizer::decode`] and the
//! incremental decoder both concatenate [`Tokenizer::token_bytes`], so streamed and
//! non-streamed text can never disagree.
//!
//! [`testing`] builds a one-char-per-token tokenizer and a ChatML template in code, for tests
//! on models built in code.

mod bytes;
mod detok;
mod gguf;
mod hf;
mod jinja_fns;
mod prompt;
mod template;
pub mod testing;

use std::path::{Path, PathBuf};

pub use detok::IncrementalDecoder;
pub use prompt::{render_prompt, Prompt, PromptError};
pub use template::{ChatTemplate, TemplateError};

/// Texts of special tokens that end a generation, whatever the model calls its eos. The same
/// list llama.cpp uses to build its end-of-generation set, so that a model that emits
/// `<|endoftext|>` where its eos is `<|im_end|>` stops here as it does there.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// Why a tokenizer could not be built, or a text not encoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required metadata field or file entry is absent.
    #[error("{source_name}: missing field `{field}`")]
    MissingField { source_name: String, field: String },
    /// A field holds a value of the wrong type.
    #[error("{source_name}: field `{field}` expected {expected}, found {found}")]
    WrongType {
        source_name: String,
        field: String,
        expected: &'static str,
        found: String,
    },
    /// Two parallel arrays (tokens and scores, tokens and types) differ in length.
    #[error(
        "{source_name}: field `{field}` has {found} entries, expected {expected} (one per token)"
    )]
    LengthMismatch {
        source_name: String,
        field: String,
        expected: usize,
        found: usize,
    },
    /// A token id field points past the end of the vocabulary.
    #[error(
        "{source_name}: field `{field}` is {id}, outside the vocabulary of {vocab_size} tokens"
    )]
    IdOutOfRange {
        source_name: String,
        field: String,
        id: u64,
        vocab_size: usize,
    },
    /// `tokenizer.ggml.model` names a tokenizer kind this crate does not build.
    #[error("GGUF: field `tokenizer.ggml.model` is {found:?}, expected \"gpt2\" or \"llama\"")]
    UnknownModel { found: String },
    /// A merge rule is not of the form `"left right"`.
    #[error("GGUF: `tokenizer.ggml.merges[{index}]` is {found:?}, expected two tokens separated by one space")]
    BadMerge { index: usize, found: String },
    /// The `tokenizers` crate rejected the assembled pipeline.
    #[error("building the {what}: {message}")]
    Build { what: &'static str, message: String },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not the JSON it should be.
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The `tokenizers` pipeline failed on an input text.
    #[error("encoding {chars} chars of text: {message}")]
    Encode { chars: usize, message: String },
}

/// How a vocabulary entry's text maps back to the bytes it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteEncoding {
    /// GPT-2 byte-level BPE: every byte is written as one printable char (`Ġ` for a space).
    ByteLevel,
    /// SentencePiece: `▁` is a space and `<0xXX>` tokens are single raw bytes.
    SentencePiece,
    /// Token text is the bytes, as UTF-8.
    Plain,
}

/// The pieces a loader hands to [`Tokenizer::assemble`].
struct Parts {
    /// Pipeline with added tokens registered; parses special-token text.
    hf: tokenizers::Tokenizer,
    /// Raw bytes per id, `vocab_size` entries.
    token_bytes: Vec<Vec<u8>>,
    /// Whether each id is a special (control) token, `vocab_size` entries.
    special: Vec<bool>,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    /// End-of-generation ids beyond eos that the source declares (eot, eom, generation_config).
    extra_stops: Vec<u32>,
    add_bos: bool,
    /// Whether decoding drops one leading space (SentencePiece with a space prefix).
    strip_leading_space: bool,
}

/// A loaded tokenizer: encoding through `tokenizers`, decoding through raw token bytes.
pub struct Tokenizer {
    /// Pipeline that turns special-token text such as `<|im_end|>` into its id.
    parse_special: tokenizers::Tokenizer,
    /// The same pipeline with special-token matching off: such text is tokenized as text.
    /// Two instances, because the switch is a `&mut` setting and encoding must work via `&self`.
    plain: tokenizers::Tokenizer,
    /// Raw bytes per id (`vocab_size` entries): what decoding concatenates.
    token_bytes: Vec<Vec<u8>>,
    /// Whether each id is a special (control) token, skipped by `skip_special`.
    special: Vec<bool>,
    /// BOS id and text, as the model declares them.
    bos: Option<(u32, String)>,
    /// EOS id and text, as the model declares them.
    eos: Option<(u32, String)>,
    /// Ids that end a generation, eos first, no repeats.
    stop_ids: Vec<u32>,
    /// Whether `encode_prompt` starts a prompt with BOS.
    add_bos: bool,
    /// SentencePiece with a space prefix: decoding drops the one leading space that
    /// encoding added.
    strip_leading_space: bool,
}

impl Tokenizer {
    /// Build from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(
        content: &candle_core::quantized::gguf_file::Content,
    ) -> Result<Self, TokenizerError> {
        gguf::parts_from_gguf(&content.metadata).map(Self::assemble)
    }

    /// Load a Hugging Face `tokenizer.json`, with `tokenizer_config.json` for bos/eos/add_bos
    /// and `generation_config.json` for extra end-of-generation ids (`eos_token_id`, an int or
    /// a list), when given.
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
        generation_config: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        hf::parts_from_hf_files(tokenizer_json, tokenizer_config, generation_config)
            .map(Self::assemble)
    }

    fn assemble(parts: Parts) -> Self {
        let mut plain = parts.hf.clone();
        plain.set_encode_special_tokens(true);
        let mut stop_ids: Vec<u32> = Vec::new();
        let named_stops = parts
            .token_bytes
            .iter()
            .enumerate()
            .filter(|(id, bytes)| {
                parts.special[*id]
                    && END_OF_GENERATION_TEXTS
                        .iter()
                        .any(|text| text.as_bytes() == bytes.as_slice())
            })
            .map(|(id, _)| id as u32);
        let declared = parts.eos.iter().map(|(id, _)| *id);
        for id in declared.chain(parts.extra_stops).chain(named_stops) {
            if (id as usize) < parts.token_bytes.len() && !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        Self {
            parse_special: parts.hf,
            plain,
            token_bytes: parts.token_bytes,
            special: parts.special,
            bos: parts.bos,
            eos: parts.eos,
            stop_ids,
            add_bos: parts.add_bos,
            strip_leading_space: parts.strip_leading_space,
        }
    }

    /// Token ids of `text`; never adds BOS. With `parse_special` false, special-token text is
    /// tokenized as ordinary text (a user cannot inject `<|im_end|>`).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let pipeline = if parse_special {
            &self.parse_special
        } else {
            &self.plain
        };
        let encoding = pipeline
            .encode_fast(text, false)
            .map_err(|err| TokenizerError::Encode {
                chars: text.chars().count(),
                message: err.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encode for a model prompt: prepends BOS iff the model says add_bos, unless the ids
    /// already start with it (a chat template that writes `bos_token` itself): a doubled BOS
    /// degrades Llama-family output.
    pub fn encode_prompt(
        &self,
        text: &str,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let ids = self.encode(text, parse_special)?;
        match (&self.bos, self.add_bos) {
            (Some((bos, _)), true) if ids.first() != Some(bos) => {
                Ok(std::iter::once(*bos).chain(ids).collect())
            }
            _ => Ok(ids),
        }
    }

    /// Text of `ids`, invalid UTF-8 replaced by U+FFFD. Unknown ids contribute nothing.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if !(skip_special && self.is_special(id)) {
                bytes.extend_from_slice(self.token_bytes(id));
            }
        }
        let text = match self.strip_leading_space {
            true => bytes.strip_prefix(b" ").unwrap_or(&bytes),
            false => &bytes,
        };
        String::from_utf8_lossy(text).into_owned()
    }

    /// Raw bytes of a token (empty for unknown ids); special tokens give their text bytes.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Id of a vocabulary entry, by its text as the vocabulary writes it (`Ġworld`, `▁world`,
    /// `<|im_end|>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.parse_special.token_to_id(token)
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The BOS token and its text, if the model declares one.
    pub fn bos_token(&self) -> Option<(u32, &str)> {
        self.bos.as_ref().map(|(id, text)| (*id, text.as_str()))
    }

    /// The EOS token and its text, if the model declares one.
    pub fn eos_token(&self) -> Option<(u32, &str)> {
        self.eos.as_ref().map(|(id, text)| (*id, text.as_str()))
    }

    /// Ids that end a generation: eos first, then eot/eom/generation_config ids and the special
    /// tokens in [`END_OF_GENERATION_TEXTS`] that the vocabulary has.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Whether prompts start with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The underlying `tokenizers` pipeline (special-token parsing on), e.g. to save it as a
    /// `tokenizer.json`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.parse_special
    }
}

impl std::fmt::Debug for Tokenizer {
    /// The vocabulary is left out: it runs to hundreds of thousands of entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("stop_ids", &self.stop_ids)
            .field("add_bos", &self.add_bos)
            .field("strip_leading_space", &self.strip_leading_space)
            .finish_non_exhaustive()
    }
}
