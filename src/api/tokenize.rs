//! `POST /tokenize` (a prompt, or chat messages through the template) and `POST /detokenize`.

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::extract::OpenAiJson;
use super::openai::{DetokenizeRequest, TokenizeRequest};
use super::validate::ValidationError;
use super::AppState;

pub async fn tokenize(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<TokenizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let served = state.served()?;
    let validator = served.validator.clone();
    let max = validator.limits().max_context;
    let ids = super::blocking(move || match (&req.messages, &req.prompt) {
        (Some(m), _) => validator.chat_prompt(m, None).map(|p| p.ids),
        (None, Some(p)) => {
            let tok = validator.tokenizer();
            match req.add_special_tokens {
                true => tok.encode_prompt(p, false),
                false => tok.encode(p, false),
            }
            .map_err(|e| ValidationError::invalid(e.to_string(), "prompt"))
        }
        (None, None) => Err(ValidationError::invalid(
            "give `prompt` or `messages`",
            "prompt",
        )),
    })
    .await?;
    Ok(Json(serde_json::json!({
        "tokens": ids, "count": ids.len(), "max_model_len": max,
    })))
}

pub async fn detokenize(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<DetokenizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tok = state.served()?.validator.tokenizer().clone();
    let text = super::blocking(move || Ok::<_, ApiError>(tok.decode(&req.tokens, false))).await?;
    Ok(Json(serde_json::json!({"prompt": text})))
}
