//! `POST /v1/embeddings`: the mean-pooled, L2-normalised final hidden states of the generative
//! model (see [`crate::engine::embed`]) — fine for tests and simple retrieval, not a trained
//! embedding model. Input: a string, strings, token ids or lists of token ids; output as floats
//! or base64 (little-endian f32, what the `openai` client decodes). `dimensions` must equal the
//! hidden size: the vectors are not trained to be truncated.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::openai::PromptField;
use super::{blocking, parse_json, AppState};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: PromptField,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
    pub user: Option<String>,
}

/// One vector: floats, or base64 of its little-endian f32 bytes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

pub async fn handle(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_inner(state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle_inner(
    state: AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse_json(body)?;
    state.check_model(req.model.as_deref())?;
    let served = state.served()?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
                Some("encoding_format"),
            ))
        }
    };
    let hidden = served.engine.hidden_size();
    if let Some(d) = req.dimensions.filter(|&d| d != hidden as u64) {
        return Err(ApiError::invalid(
            format!("dimensions must be the model's hidden size {hidden}, got {d}"),
            Some("dimensions"),
        ));
    }
    let tokenizer = served.tokenizer.clone();
    let input = req.input;
    let inputs = blocking(move || tokenize(&input, tokenizer.as_deref())).await?;
    let pending = served
        .engine
        .embed(inputs)
        .map_err(|e| ApiError::from(e).at("input"))?;
    let tokens = pending.tokens();
    // Dropping this future (the client left) drops `pending`, which cancels the job.
    let vectors = pending.wait().await.map_err(ApiError::Internal)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match base64 {
                true => Vector::Base64(base64_f32(&v)),
                false => Vector::Float(v),
            },
        })
        .collect();
    Ok(Json(EmbeddingResponse {
        object: "list",
        data,
        model: state.model_name().to_string(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response())
}

/// Token ids of every input; 400 for an empty list or an empty input.
fn tokenize(input: &PromptField, tok: Option<&Tokenizer>) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |s: &String| -> Result<Vec<u32>, ApiError> {
        let tok = tok.ok_or_else(|| {
            ApiError::invalid("this model has no tokenizer: send token ids", Some("input"))
        })?;
        tok.encode_prompt(s, false)
            .map_err(|e| ApiError::invalid(e.to_string(), Some("input")))
    };
    let inputs: Vec<Vec<u32>> = match input {
        // Empty strings are refused even when the tokenizer would add a BOS to them.
        PromptField::Text(s) if s.is_empty() => Vec::new(),
        PromptField::Texts(v) if v.iter().any(String::is_empty) => vec![Vec::new()],
        PromptField::Text(s) => vec![encode(s)?],
        PromptField::Texts(v) => v.iter().map(encode).collect::<Result<_, _>>()?,
        PromptField::Ids(ids) => vec![ids.clone()],
        PromptField::IdLists(v) => v.clone(),
    };
    if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid(
            "input must not be empty, nor hold an empty item",
            Some("input"),
        ));
    }
    Ok(inputs)
}

/// Standard base64 (with padding) of the little-endian bytes of `v`.
pub fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32_with_padding() {
        // 1.0f32 = 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        // Two floats, 8 bytes: one pad.
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[]), "");
        assert_eq!(base64_f32(&[0.0; 3]), "AAAAAAAAAAAAAAAA");
    }

    #[test]
    fn empty_inputs_are_refused() {
        for input in [
            serde_json::json!(""),
            serde_json::json!([]),
            serde_json::json!([[]]),
            serde_json::json!([[1], []]),
            serde_json::json!(["a", ""]),
        ] {
            let f: PromptField = serde_json::from_value(input.clone()).expect("parses");
            let e = tokenize(&f, None).expect_err("empty");
            assert_eq!(e.parts().0.as_u16(), 400, "{input}");
        }
        let f: PromptField = serde_json::from_value(serde_json::json!([[1, 2], [3]])).expect("ok");
        assert_eq!(tokenize(&f, None).expect("ids"), vec![vec![1, 2], vec![3]]);
    }
}
