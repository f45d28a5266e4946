//! Builds the tokenizer [`Parts`] from Hugging Face files: `tokenizer.json` (the pipeline),
//! `tokenizer_config.json` (bos/eos texts, `add_bos_token`) and `generation_config.json`
//! (`eos_token_id`, one id or a list). Runs once at load.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

use super::{bytes, ByteEncoding, Parts, TokenizerError};

fn read_json(path: &Path) -> Result<(String, Json), TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json = serde_json::from_str(&text).map_err(|err| TokenizerError::Parse {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    Ok((text, json))
}

/// A special-token entry of `tokenizer_config.json`: a string or `{"content": ...}`.
pub(super) fn token_text(value: &Json) -> Option<&str> {
    match value {
        Json::String(s) => Some(s),
        Json::Object(map) => map.get("content")?.as_str(),
        _ => None,
    }
}

/// All components of a pipeline stage: the stage itself, or the members of a `Sequence`.
fn components(stage: &Json) -> Vec<&Json> {
    match stage.get("type").and_then(Json::as_str) {
        Some("Sequence") => ["decoders", "pretokenizers", "normalizers", "processors"]
            .iter()
            .filter_map(|key| stage.get(*key)?.as_array())
            .flatten()
            .flat_map(components)
            .collect(),
        Some(_) => vec![stage],
        None => vec![],
    }
}

fn has_component(stage: &Json, kind: &str) -> bool {
    components(stage)
        .iter()
        .any(|c| c.get("type").and_then(Json::as_str) == Some(kind))
}

/// How token texts map to bytes, from the decoder (or, lacking one, the pre-tokenizer).
fn byte_encoding(json: &Json) -> ByteEncoding {
    let decoder = &json["decoder"];
    let byte_fallback = json["model"]["byte_fallback"].as_bool() == Some(true);
    if has_component(decoder, "ByteLevel") || has_component(&json["pre_tokenizer"], "ByteLevel") {
        ByteEncoding::ByteLevel
    } else if byte_fallback
        || has_component(decoder, "ByteFallback")
        || has_component(decoder, "Metaspace")
    {
        ByteEncoding::SentencePiece
    } else {
        ByteEncoding::Plain
    }
}

/// Whether the decoder drops the first token's leading space (`Strip(" ", 1, 0)`, or a
/// `Metaspace` that prepends one).
fn strips_leading_space(json: &Json) -> bool {
    components(&json["decoder"])
        .iter()
        .any(|c| match c.get("type").and_then(Json::as_str) {
            Some("Strip") => {
                c["content"].as_str() == Some(" ") && c["start"].as_u64().unwrap_or(0) >= 1
            }
            Some("Metaspace") => match c.get("prepend_scheme").and_then(Json::as_str) {
                Some(scheme) => scheme != "never",
                None => c["add_prefix_space"].as_bool() != Some(false),
            },
            _ => false,
        })
}

/// Whether the post-processor's single-sequence template starts with `bos` (Llama 3 style
/// tokenizers that say so only there).
fn template_adds_bos(json: &Json, bos: &str) -> bool {
    components(&json["post_processor"]).iter().any(|c| {
        c["type"].as_str() == Some("TemplateProcessing")
            && c["single"][0]["SpecialToken"]["id"].as_str() == Some(bos)
    })
}

/// `eos_token_id` of a generation config: one id or a list.
fn generation_eos_ids(path: &Path) -> Result<Vec<u32>, TokenizerError> {
    let (_, json) = read_json(path)?;
    let wrong = |found: &Json| TokenizerError::WrongType {
        source_name: path.display().to_string(),
        field: "eos_token_id".into(),
        expected: "a token id or a list of token ids",
        found: found.to_string(),
    };
    let as_id = |v: &Json| {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| wrong(v))
    };
    match &json["eos_token_id"] {
        Json::Null => Ok(vec![]),
        Json::Array(items) => items.iter().map(as_id).collect(),
        one => Ok(vec![as_id(one)?]),
    }
}

/// Loads the pipeline and assembles the parts of a [`super::Tokenizer`].
pub(super) fn parts_from_hf_files(
    tokenizer_json: &Path,
    tokenizer_config: Option<&Path>,
    generation_config: Option<&Path>,
) -> Result<Parts, TokenizerError> {
    let (text, json) = read_json(tokenizer_json)?;
    let hf = tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|err| {
        TokenizerError::Parse {
            path: tokenizer_json.to_path_buf(),
            message: err.to_string(),
        }
    })?;
    let config = match tokenizer_config {
        Some(path) => read_json(path)?.1,
        None => Json::Null,
    };
    let named = |key: &str| -> Option<(u32, String)> {
        let text = token_text(&config[key])?;
        Some((hf.token_to_id(text)?, text.to_string()))
    };
    let bos = named("bos_token");
    let eos = named("eos_token");
    let add_bos = match config["add_bos_token"].as_bool() {
        Some(add) => add,
        None => bos
            .as_ref()
            .is_some_and(|(_, text)| template_adds_bos(&json, text)),
    };
    let extra_stops = match generation_config {
        Some(path) => generation_eos_ids(path)?,
        None => vec![],
    };

    let vocab = hf.get_vocab(true);
    let vocab_size = vocab.values().max().map_or(0, |max| *max as usize + 1);
    let added = hf.get_added_tokens_decoder();
    let encoding = byte_encoding(&json);
    let by_id: HashMap<u32, &str> = vocab.iter().map(|(t, id)| (*id, t.as_str())).collect();
    let mut token_bytes = vec![Vec::new(); vocab_size];
    let mut special = vec![false; vocab_size];
    for id in 0..vocab_size as u32 {
        let slot = id as usize;
        if let Some(token) = added.get(&id) {
            token_bytes[slot] = token.content.as_bytes().to_vec();
            special[slot] = token.special;
        } else if let Some(text) = by_id.get(&id) {
            token_bytes[slot] = bytes::token_bytes(text, encoding);
        }
    }
    Ok(Parts {
        strip_leading_space: encoding == ByteEncoding::SentencePiece && strips_leading_space(&json),
        hf,
        token_bytes,
        special,
        bos,
        eos,
        extra_stops,
        add_bos,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::small_spm;
    use super::super::Tokenizer;
    use super::*;

    #[test]
    fn a_saved_sentencepiece_pipeline_loads_back_with_its_config() {
        let original = small_spm();
        let dir = tempfile::tempdir().expect("temp dir");
        let tokenizer_json = dir.path().join("tokenizer.json");
        original
            .inner()
            .save(&tokenizer_json, false)
            .expect("saves tokenizer.json");
        let config = dir.path().join("tokenizer_config.json");
        let config_json = r#"{"bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>", "add_bos_token": true}"#;
        std::fs::write(&config, config_json).expect("writes config");
        let generation = dir.path().join("generation_config.json");
        std::fs::write(&generation, r#"{"eos_token_id": [2, 0]}"#).expect("writes config");

        let loaded = Tokenizer::from_hf_files(&tokenizer_json, Some(&config), Some(&generation))
            .expect("loads");
        assert_eq!(loaded.vocab_size(), original.vocab_size());
        assert_eq!(loaded.bos_token(), Some((1, "<s>")));
        assert_eq!(loaded.eos_token(), Some((2, "</s>")));
        assert_eq!(loaded.stop_token_ids(), [2, 0]);
        assert!(loaded.add_bos());
        for text in ["Hello world", "Hello é</s>", " Hello"] {
            let ids = original.encode_prompt(text, true).expect("encodes");
            assert_eq!(loaded.encode_prompt(text, true).expect("encodes"), ids);
            assert_eq!(loaded.decode(&ids, false), original.decode(&ids, false));
        }
        for id in 0..original.vocab_size() as u32 {
            assert_eq!(loaded.token_bytes(id), original.token_bytes(id), "id {id}");
            assert_eq!(loaded.is_special(id), original.is_special(id), "id {id}");
        }
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("tokenizer.json");
        let err = Tokenizer::from_hf_files(&missing, None, None).expect_err("missing file");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        std::fs::write(&missing, "{not json").expect("writes");
        let err = Tokenizer::from_hf_files(&missing, None, None).expect_err("bad json");
        assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");
    }
}
