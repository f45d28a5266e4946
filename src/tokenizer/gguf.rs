//! Builds the tokenizer [`Parts`] from GGUF metadata (`tokenizer.ggml.*`), the way llama.cpp
//! reads it: `gpt2` models become a byte-level BPE with the pre-tokenizer named by
//! `tokenizer.ggml.pre`; `llama` (SentencePiece) models become a byte-fallback BPE whose merges
//! are derived from the token scores. Runs once at load; a malformed file is an error here,
//! never a panic.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior};

use super::{bytes, ByteEncoding, Parts, TokenizerError};

const SOURCE: &str = "GGUF";

/// Llama 3's split regex (llama.cpp's `llama-bpe`): up to three digits per chunk.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's split regex (llama.cpp's `qwen2`): every digit alone.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.token_type` values, as llama.cpp writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Undefined,
}

impl TokenType {
    fn from_code(code: i64) -> Self {
        match code {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// Special tokens: matched in text only with parse_special, skipped by skip_special.
    fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }

    /// Tokens matched as whole strings before pre-tokenization (HF "added tokens").
    fn is_added(self) -> bool {
        matches!(self, Self::Control | Self::Unknown | Self::UserDefined)
    }
}

/// Typed access to the metadata map, with errors that name the field.
struct Meta<'a>(&'a HashMap<String, Value>);

impl<'a> Meta<'a> {
    fn wrong_type(field: &str, expected: &'static str, found: &Value) -> TokenizerError {
        TokenizerError::WrongType {
            source_name: SOURCE.into(),
            field: field.into(),
            expected,
            found: format!("{:?}", found.value_type()),
        }
    }

    fn missing(field: &str) -> TokenizerError {
        TokenizerError::MissingField {
            source_name: SOURCE.into(),
            field: field.into(),
        }
    }

    fn string(&self, field: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Self::wrong_type(field, "a string", other)),
        }
    }

    fn bool(&self, field: &str) -> Result<Option<bool>, TokenizerError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Self::wrong_type(field, "a bool", other)),
        }
    }

    fn id(&self, field: &str) -> Result<Option<u32>, TokenizerError> {
        let Some(value) = self.0.get(field) else {
            return Ok(None);
        };
        let id = integer(value)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Self::wrong_type(field, "an unsigned 32-bit integer", value))?;
        Ok(Some(id))
    }

    fn array(&self, field: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(Self::wrong_type(field, "an array", other)),
        }
    }

    fn strings(&self, field: &str) -> Result<Option<Vec<String>>, TokenizerError> {
        let Some(items) = self.array(field)? else {
            return Ok(None);
        };
        let strings = items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(Self::wrong_type(field, "an array of strings", other)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(strings))
    }

    fn floats(&self, field: &str) -> Result<Option<Vec<f32>>, TokenizerError> {
        let Some(items) = self.array(field)? else {
            return Ok(None);
        };
        let floats = items
            .iter()
            .map(|item| match item {
                Value::F32(v) => Ok(*v),
                Value::F64(v) => Ok(*v as f32),
                other => Err(Self::wrong_type(field, "an array of floats", other)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(floats))
    }

    fn integers(&self, field: &str) -> Result<Option<Vec<i64>>, TokenizerError> {
        let Some(items) = self.array(field)? else {
            return Ok(None);
        };
        let ints = items
            .iter()
            .map(|item| {
                integer(item).ok_or_else(|| Self::wrong_type(field, "an array of integers", item))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(ints))
    }
}

/// Any GGUF integer as an `i64`.
pub(super) fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::U8(v) => Some(i64::from(*v)),
        Value::I8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::I16(v) => Some(i64::from(*v)),
        Value::U32(v) => Some(i64::from(*v)),
        Value::I32(v) => Some(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::I64(v) => Some(*v),
        _ => None,
    }
}

/// Which tokenizer algorithm `tokenizer.ggml.model` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelKind {
    /// Byte-level BPE with explicit merges.
    Gpt2,
    /// SentencePiece BPE with scores.
    Llama,
}

/// The vocabulary fields of a GGUF, read and checked against each other.
struct GgufVocab {
    kind: ModelKind,
    pre: Option<String>,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    scores: Option<Vec<f32>>,
    merges: Option<Vec<String>>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    /// eot and eom ids: extra end-of-generation tokens.
    extra_stops: Vec<u32>,
    add_bos: bool,
    add_space_prefix: bool,
}

impl GgufVocab {
    fn read(metadata: &HashMap<String, Value>) -> Result<Self, TokenizerError> {
        let meta = Meta(metadata);
        let model = meta
            .string("tokenizer.ggml.model")?
            .ok_or_else(|| Meta::missing("tokenizer.ggml.model"))?;
        let kind = match model {
            "gpt2" => ModelKind::Gpt2,
            "llama" => ModelKind::Llama,
            other => {
                return Err(TokenizerError::UnknownModel {
                    found: other.into(),
                })
            }
        };
        let tokens = meta
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| Meta::missing("tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        let types = match meta.integers("tokenizer.ggml.token_type")? {
            Some(codes) => {
                check_len("tokenizer.ggml.token_type", n, codes.len())?;
                codes.into_iter().map(TokenType::from_code).collect()
            }
            None => vec![TokenType::Normal; n],
        };
        let scores = meta.floats("tokenizer.ggml.scores")?;
        if let Some(scores) = &scores {
            check_len("tokenizer.ggml.scores", n, scores.len())?;
        }
        let id = |field: &str| -> Result<Option<u32>, TokenizerError> {
            let id = meta.id(field)?;
            match id {
                Some(id) if id as usize >= n => Err(TokenizerError::IdOutOfRange {
                    source_name: SOURCE.into(),
                    field: field.into(),
                    id: u64::from(id),
                    vocab_size: n,
                }),
                _ => Ok(id),
            }
        };
        let extra_stops = [
            id("tokenizer.ggml.eot_token_id")?,
            id("tokenizer.ggml.eom_token_id")?,
        ];
        Ok(Self {
            kind,
            pre: meta.string("tokenizer.ggml.pre")?.map(str::to_string),
            scores,
            merges: meta.strings("tokenizer.ggml.merges")?,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            extra_stops: extra_stops.into_iter().flatten().collect(),
            // llama.cpp's defaults: SentencePiece models start with BOS, byte-level ones not.
            add_bos: meta
                .bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(kind == ModelKind::Llama),
            add_space_prefix: meta
                .bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true),
            tokens,
            types,
        })
    }
}

fn check_len(field: &str, expected: usize, found: usize) -> Result<(), TokenizerError> {
    if expected == found {
        return Ok(());
    }
    Err(TokenizerError::LengthMismatch {
        source_name: SOURCE.into(),
        field: field.into(),
        expected,
        found,
    })
}

fn build_err(what: &'static str) -> impl Fn(tokenizers::Error) -> TokenizerError {
    move |err| TokenizerError::Build {
        what,
        message: err.to_string(),
    }
}

/// Reads the tokenizer metadata and assembles the parts of a [`super::Tokenizer`].
pub(super) fn parts_from_gguf(metadata: &HashMap<String, Value>) -> Result<Parts, TokenizerError> {
    let vocab = GgufVocab::read(metadata)?;
    let (mut hf, encoding, strip_leading_space) = match vocab.kind {
        ModelKind::Gpt2 => (byte_level_pipeline(&vocab)?, ByteEncoding::ByteLevel, false),
        ModelKind::Llama => (
            sentencepiece_pipeline(&vocab)?,
            ByteEncoding::SentencePiece,
            vocab.add_space_prefix,
        ),
    };
    let added = vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .filter(|(_, ty)| ty.is_added())
        .map(|(text, ty)| AddedToken::from(text.clone(), ty.is_special()).normalized(false));
    hf.add_tokens(added).map_err(build_err("added tokens"))?;

    let token_bytes = vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .map(|(text, ty)| match ty {
            ty if ty.is_added() => text.as_bytes().to_vec(),
            _ => bytes::token_bytes(text, encoding),
        })
        .collect();
    let named = |id: Option<u32>| id.map(|id| (id, vocab.tokens[id as usize].clone()));
    Ok(Parts {
        hf,
        token_bytes,
        special: vocab.types.iter().map(|ty| ty.is_special()).collect(),
        bos: named(vocab.bos),
        eos: named(vocab.eos),
        extra_stops: vocab.extra_stops.clone(),
        add_bos: vocab.add_bos,
        strip_leading_space,
    })
}

/// token -> id, keeping the first id when a text repeats (the BPE needs a bijection; the
/// later ids stay decodable through the token bytes).
fn vocab_map(tokens: &[String]) -> Vocab {
    let mut map: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        map.entry(token.as_str()).or_insert(id as u32);
    }
    if map.len() < tokens.len() {
        tracing::warn!(
            duplicates = tokens.len() - map.len(),
            "GGUF vocabulary repeats token texts; the later ids are never produced by encoding"
        );
    }
    map.into_iter()
        .map(|(token, id)| (token.to_string(), id))
        .collect()
}

fn byte_level_pipeline(vocab: &GgufVocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = vocab
        .merges
        .as_ref()
        .ok_or_else(|| Meta::missing("tokenizer.ggml.merges"))?
        .iter()
        .enumerate()
        .map(|(index, merge)| match merge.split_once(' ') {
            Some((left, right)) => Ok((left.to_string(), right.to_string())),
            None => Err(TokenizerError::BadMerge {
                index,
                found: merge.clone(),
            }),
        })
        .collect::<Result<Merges, _>>()?;
    let pre = pre_tokenizer(vocab.pre.as_deref())?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(&vocab.tokens), merges)
        // llama.cpp looks a whole pre-token up in the vocabulary before merging for Llama 3.
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(build_err("byte-level BPE"))?;
    let mut hf = tokenizers::Tokenizer::new(bpe);
    hf.with_pre_tokenizer(Some(pre.wrapper));
    hf.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok(hf)
}

struct PreTokenizer {
    wrapper: PreTokenizerWrapper,
    ignore_merges: bool,
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
    let gpt2_regex = || PreTokenizerWrapper::from(ByteLevel::new(false, false, true));
    let split_then_bytes = |regex: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(build_err("split pre-tokenizer"))?;
        Ok(PreTokenizerWrapper::from(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])))
    };
    let (wrapper, ignore_merges) = match pre {
        // Every digit its own pre-token, then GPT-2's regex; no prefix space (candle's own
        // GGUF tokenizer adds one, which breaks the first word of every prompt). llama.cpp
        // gives StarCoder's vocabularies, which SmolLM's descends from, the same split.
        Some("smollm" | "starcoder" | "refact") => (
            PreTokenizerWrapper::from(PreTokenizerSequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, false, true).into(),
            ])),
            false,
        ),
        Some("llama-bpe" | "llama3" | "smaug-bpe") => (split_then_bytes(LLAMA3_SPLIT)?, true),
        Some("qwen2") => (split_then_bytes(QWEN2_SPLIT)?, false),
        None | Some("default" | "gpt2" | "gpt-2") => (gpt2_regex(), false),
        Some(other) => {
            tracing::warn!(
                pre = other,
                "unknown GGUF tokenizer.ggml.pre; using GPT-2's split regex, ids may differ \
                 from llama.cpp"
            );
            (gpt2_regex(), false)
        }
    };
    Ok(PreTokenizer {
        wrapper,
        ignore_merges,
    })
}

fn sentencepiece_pipeline(vocab: &GgufVocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let scores = vocab
        .scores
        .as_ref()
        .ok_or_else(|| Meta::missing("tokenizer.ggml.scores"))?;
    let unk = vocab
        .unk
        .or_else(|| {
            let position = vocab
                .types
                .iter()
                .position(|ty| *ty == TokenType::Unknown)?;
            u32::try_from(position).ok()
        })
        .map(|id| vocab.tokens[id as usize].clone());
    let mut builder = BPE::builder()
        .vocab_and_merges(
            vocab_map(&vocab.tokens),
            merges_from_scores(&vocab.tokens, scores),
        )
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(build_err("SentencePiece BPE"))?;
    let mut hf = tokenizers::Tokenizer::new(bpe);

    let spaces = Replace::new(" ", "▁").map_err(build_err("SentencePiece normalizer"))?;
    let normalizer = match vocab.add_space_prefix {
        true => NormalizerWrapper::from(NormalizerSequence::new(vec![
            Prepend::new("▁".into()).into(),
            spaces.into(),
        ])),
        false => spaces.into(),
    };
    hf.with_normalizer(Some(normalizer))
        .map_err(build_err("SentencePiece normalizer"))?;

    let underscores = Replace::new("▁", " ").map_err(build_err("SentencePiece decoder"))?;
    let mut decoders = vec![
        DecoderWrapper::Replace(underscores),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if vocab.add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    hf.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(hf)
}

/// BPE merges implied by a SentencePiece vocabulary, as Hugging Face's converter derives them:
/// every split of a token into two in-vocabulary halves is a merge, ranked by the merged
/// token's score (highest first; ties keep vocabulary order, then the halves' ids).
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Merges {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .rev()
        .map(|(id, token)| (token.as_str(), id))
        .collect();
    let mut ranked: Vec<(f32, &str, &str)> = Vec::new();
    for (token, score) in tokens.iter().zip(scores) {
        let mut local: Vec<(usize, usize, &str, &str)> = token
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = token.split_at(at);
                Some((*ids.get(left)?, *ids.get(right)?, left, right))
            })
            .collect();
        local.sort_by_key(|(left_id, right_id, _, _)| (*left_id, *right_id));
        ranked.extend(local.into_iter().map(|(_, _, l, r)| (*score, l, r)));
    }
    // Stable: equal scores keep the order above.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .map(|(_, left, right)| (left.to_string(), right.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{content, small_spm, small_spm_content, strings};
    use super::super::Tokenizer;
    use super::*;

    fn pieces(tokenizer: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|id| {
                tokenizer
                    .inner()
                    .id_to_token(*id)
                    .expect("id in vocabulary")
            })
            .collect()
    }

    #[test]
    fn sentencepiece_words_get_the_space_prefix_and_decode_back() {
        let tokenizer = small_spm();
        let ids = tokenizer.encode("Hello world", true).expect("encodes");
        assert_eq!(pieces(&tokenizer, &ids), ["▁Hello", "▁world"]);
        assert_eq!(tokenizer.decode(&ids, false), "Hello world");
        assert_eq!(tokenizer.token_bytes(ids[1]), b" world");
    }

    #[test]
    fn sentencepiece_falls_back_to_bytes_for_unknown_chars() {
        let tokenizer = small_spm();
        let ids = tokenizer.encode("Hello é", true).expect("encodes");
        assert_eq!(
            pieces(&tokenizer, &ids),
            ["▁Hello", "▁", "<0xC3>", "<0xA9>"]
        );
        assert_eq!(tokenizer.token_bytes(ids[2]), [0xC3]);
        assert_eq!(tokenizer.decode(&ids, false), "Hello é");
    }

    #[test]
    fn sentencepiece_prompt_gets_bos_and_special_text_is_parsed_only_when_asked() {
        let tokenizer = small_spm();
        assert!(tokenizer.add_bos());
        assert_eq!(tokenizer.bos_token(), Some((1, "<s>")));
        assert_eq!(tokenizer.stop_token_ids(), [2]);
        let ids = tokenizer.encode_prompt("Hello</s>", true).expect("encodes");
        assert_eq!(pieces(&tokenizer, &ids), ["<s>", "▁Hello", "</s>"]);
        // A template that writes the BOS itself does not get a second one.
        let templated = tokenizer
            .encode_prompt("<s>Hello</s>", true)
            .expect("encodes");
        assert_eq!(templated, ids);
        let as_text = tokenizer.encode_prompt("<s>", false).expect("encodes");
        assert_eq!(as_text[0], 1);
        assert_ne!(as_text[1], 1);
        assert_eq!(tokenizer.decode(&ids, true), "Hello");
        assert_eq!(tokenizer.decode(&ids, false), "<s> Hello</s>");
        let plain = tokenizer.encode("</s>", false).expect("encodes");
        assert!(plain.iter().all(|id| !tokenizer.is_special(*id)));
        assert_eq!(tokenizer.decode(&plain, false), "</s>");
    }

    #[test]
    fn merges_rank_by_merged_score_then_vocabulary_order() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = merges_from_scores(&tokens, &scores);
        let expected = [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")];
        let expected: Merges = expected
            .iter()
            .map(|(l, r)| (l.to_string(), r.to_string()))
            .collect();
        assert_eq!(merges, expected);
    }

    #[test]
    fn malformed_metadata_is_an_error_naming_the_field() {
        let no_tokens = content(vec![("tokenizer.ggml.model", Value::String("gpt2".into()))]);
        let err = Tokenizer::from_gguf(&no_tokens).expect_err("no tokens");
        assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

        let unknown = content(vec![
            ("tokenizer.ggml.model", Value::String("bert".into())),
            ("tokenizer.ggml.tokens", strings(&["a"])),
        ]);
        let err = Tokenizer::from_gguf(&unknown).expect_err("unknown model");
        assert!(matches!(err, TokenizerError::UnknownModel { .. }), "{err}");

        let mut short_scores = small_spm_content();
        short_scores.metadata.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(vec![Value::F32(0.0)]),
        );
        let err = Tokenizer::from_gguf(&short_scores).expect_err("length mismatch");
        assert!(
            matches!(&err, TokenizerError::LengthMismatch { field, found: 1, .. } if field == "tokenizer.ggml.scores"),
            "{err}"
        );

        let mut bad_bos = small_spm_content();
        bad_bos
            .metadata
            .insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1_000_000));
        let err = Tokenizer::from_gguf(&bad_bos).expect_err("bos out of range");
        assert!(matches!(err, TokenizerError::IdOutOfRange { .. }), "{err}");

        let bad_merge = content(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b", "ab"])),
            ("tokenizer.ggml.merges", strings(&["ab"])),
        ]);
        let err = Tokenizer::from_gguf(&bad_merge).expect_err("bad merge");
        assert!(
            matches!(err, TokenizerError::BadMerge { index: 0, .. }),
            "{err}"
        );

        let wrong_type = content(vec![
            ("tokenizer.ggml.model", Value::U32(2)),
            ("tokenizer.ggml.tokens", strings(&["a"])),
        ]);
        let err = Tokenizer::from_gguf(&wrong_type).expect_err("wrong type");
        assert!(matches!(err, TokenizerError::WrongType { .. }), "{err}");
    }

    #[test]
    fn llama3_pre_tokenizer_groups_digits_by_three() {
        let tokens: Vec<&str> = vec!["1", "2", "3", "4", "12", "123", "Ġ"];
        let content = content(vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("llama-bpe".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&["1 2", "12 3"])),
        ]);
        let tokenizer = Tokenizer::from_gguf(&content).expect("builds");
        let ids = tokenizer.encode("1234", true).expect("encodes");
        assert_eq!(pieces(&tokenizer, &ids), ["123", "4"]);
    }
}
