//! `POST /v1/embeddings`: the mean-pooled, L2-normalised final hidden states of the generative
//! model (see [`crate::engine::embed`]) — fine for tests and simple retrieval, not a trained
//! embedding model. Input: a string, strings, token ids or lists of token ids; output as floats
//! or base64 (little-endian f32, what the `openai` client decodes). `dimensions` must equal the
//! hidden size: the vectors are not trained to be truncated.

use axum::extract::State;
use axum::{Extension, Json};

use super::access::AccessNote;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::OpenAiJson;
use super::limits::{self, Budget};
use super::openai::{EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, Vector};
use super::AppState;

/// Embeddings of the inputs (see the module docs for what they are).
#[utoipa::path(
    post, path = "/v1/embeddings", operation_id = "create_embedding", tag = "openai",
    request_body(content = EmbeddingRequest, example = json!({
        "input": ["a cat", "a dog"], "encoding_format": "float",
    })),
    responses(
        (status = 200, description = "One vector per input.", body = EmbeddingResponse),
        (status = 400, response = ErrorEnvelope),
        (status = 404, response = ErrorEnvelope),
        (status = 413, response = ErrorEnvelope),
        (status = 429, response = ErrorEnvelope),
        (status = 503, response = ErrorEnvelope),
        (status = 504, response = ErrorEnvelope),
    ),
)]
pub async fn handle(
    State(state): State<AppState>,
    note: Option<Extension<AccessNote>>,
    budget: Option<Extension<Budget>>,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingResponse>, ApiError> {
    let limit = state.options().request_timeout;
    let served = state.served_for(req.model.as_deref()).await?;
    let validator = served.validator.clone();
    let valid = super::blocking(move || validator.embeddings(&req)).await?;
    let size = valid.inputs.iter().map(Vec::len).sum();
    limits::reserve(budget.as_ref().map(|b| &b.0), size)?;
    let pending = served.engine.embed(valid.inputs)?;
    let tokens = pending.tokens();
    if let Some(Extension(n)) = &note {
        n.update(|r| r.prompt_tokens = tokens);
    }
    // Dropping this future (the client left, or the deadline passed) drops `pending`, which
    // cancels the job.
    let vectors = match limit {
        None => pending.wait().await,
        Some(l) => tokio::time::timeout(l, pending.wait())
            .await
            .map_err(|_| ApiError::Timeout(l))?,
    }
    .map_err(ApiError::Internal)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match valid.base64 {
                true => Vector::Base64(base64_f32(&v)),
                false => Vector::Float(v),
            },
        })
        .collect();
    Ok(Json(EmbeddingResponse {
        object: "list",
        data,
        model: served.name().to_string(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
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
}
