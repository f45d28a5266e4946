//! `POST /v1/completions` (legacy): prompts as text, texts, ids or lists of ids; `echo`;
//! legacy logprobs.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::error::ApiError;
use super::generate::{self, Out};
use super::openai::*;
use super::sse::{completion_logprobs, CompletionEncoder, Meta, UsageAcc};
use super::{blocking, collect, fingerprint, merge, parse_json, sse_response, unix_now};
use super::{AppState, RequestId};
use crate::validate;

pub async fn handle(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_inner(state, rid, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle_inner(
    state: AppState,
    rid: RequestId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(body)?;
    state.check_model(req.common.model.as_deref())?;
    let served = state.served()?;
    let validation = served.validation();
    let req2 = req.clone();
    let prepared = blocking(move || validate::completion(&req2, &validation.limits()))
        .await
        .map_err(|e| e.at("prompt"))?;
    let mut rxs = Vec::new();
    let mut echo = Vec::new();
    let mut prompt_tokens = 0;
    for p in prepared {
        let n = p.valid.n;
        // Submitting each prompt; an error drops the streams already made (cancels them).
        let stream = served
            .engine
            .submit(p.valid)
            .map_err(|e| ApiError::from(e).at("prompt"))?;
        prompt_tokens += stream.prompt_tokens();
        rxs.push(generate::spawn(
            stream,
            n,
            echo.len(),
            generate::TextRules {
                stops: p.stops,
                tool_names: None,
            },
        ));
        echo.extend((0..n).map(|_| req.echo.then(|| p.prompt_text.clone())));
    }
    let total = echo.len();
    let meta = Meta {
        id: format!("cmpl-{}", rid.0),
        created: unix_now(),
        model: state.model_name().to_string(),
        fingerprint: fingerprint(),
    };
    let usage = UsageAcc {
        prompt_tokens,
        ..UsageAcc::default()
    };
    let logprobs = req.logprobs.is_some();
    let outs = merge(rxs);
    if req.common.stream == Some(true) {
        let enc = CompletionEncoder {
            meta,
            tokenizer: served.tokenizer.clone(),
            logprobs,
            include_usage: req
                .common
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            usage,
            offsets: vec![0; total],
            echo,
        };
        return Ok(sse_response(outs, enc, total));
    }
    let all = collect(outs, total).await?;
    let tok = served.tokenizer.as_deref();
    let mut usage = usage;
    let mut choices: Vec<CompletionChoice> = echo
        .into_iter()
        .enumerate()
        .map(|(index, e)| CompletionChoice {
            index,
            text: e.unwrap_or_default(),
            logprobs: logprobs.then(CompletionLogprobs::default),
            finish_reason: None,
        })
        .collect();
    for o in all {
        usage.add(&o);
        match o {
            Out::Prompt { index, tokens } => {
                // Scores of the echoed prompt: its tokens start at offset 0.
                if let Some(lp) = choices.get_mut(index).and_then(|c| c.logprobs.as_mut()) {
                    completion_logprobs(tok, &tokens, 0, lp);
                }
            }
            Out::Delta {
                index,
                text,
                tokens,
            } => {
                if let Some(c) = choices.get_mut(index) {
                    if let Some(lp) = c.logprobs.as_mut() {
                        completion_logprobs(tok, &tokens, c.text.len(), lp);
                    }
                    c.text.push_str(&text);
                }
            }
            Out::Finish { index, reason, .. } => {
                if let Some(c) = choices.get_mut(index) {
                    c.finish_reason = Some(reason.to_string());
                }
            }
            // Legacy completions take no tools: never produced here.
            Out::ToolCall { .. } | Out::Error(_) => {}
        }
    }
    Ok(Json(Completion {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        system_fingerprint: meta.fingerprint,
        choices,
        usage: Some(usage.body()),
    })
    .into_response())
}
