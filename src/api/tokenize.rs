//! `POST /tokenize` (a prompt, or chat messages through the template) and `POST /detokenize`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::openai::{DetokenizeRequest, TokenizeRequest};
use super::{blocking, parse_json, AppState};
use crate::validate::{chat_prompt, Limits};

fn no_tokenizer() -> ApiError {
    ApiError::invalid("this model has no tokenizer", None)
}

pub async fn tokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let req: TokenizeRequest = parse_json(body)?;
        state.check_model(req.model.as_deref())?;
        let served = state.served()?;
        let tok = served.tokenizer.clone().ok_or_else(no_tokenizer)?;
        let template = served.template.clone();
        let max = served.max_context;
        let ids = blocking(move || match (&req.messages, &req.prompt) {
            (Some(m), _) => {
                let lim = Limits {
                    tokenizer: Some(&tok),
                    template: template.as_deref(),
                    grammar: None,
                    max_tokens_total: max,
                };
                chat_prompt(m, &lim).map(|(ids, _)| ids)
            }
            (None, Some(p)) => match req.add_special_tokens {
                true => tok.encode_prompt(p, false),
                false => tok.encode(p, false),
            }
            .map_err(|e| ApiError::invalid(e.to_string(), Some("prompt"))),
            (None, None) => Err(ApiError::invalid(
                "give `prompt` or `messages`",
                Some("prompt"),
            )),
        })
        .await?;
        Ok::<_, ApiError>(Json(serde_json::json!({
            "tokens": ids, "count": ids.len(), "max_model_len": max,
        })))
    };
    run.await
        .map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

pub async fn detokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let req: DetokenizeRequest = parse_json(body)?;
        state.check_model(req.model.as_deref())?;
        let tok = state.served()?.tokenizer.clone().ok_or_else(no_tokenizer)?;
        let text = blocking(move || Ok(tok.decode(&req.tokens, false))).await?;
        Ok::<_, ApiError>(Json(serde_json::json!({"prompt": text})))
    };
    run.await
        .map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}
