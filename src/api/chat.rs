//! `POST /v1/chat/completions`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::error::ApiError;
use super::generate::{self, Out, TokenInfo};
use super::openai::*;
use super::sse::{chat_logprobs, ChatEncoder, Meta, UsageAcc};
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
    let req: ChatCompletionRequest = parse_json(body)?;
    state.check_model(req.common.model.as_deref())?;
    let served = state.served()?;
    let validation = served.validation();
    let req2 = req.clone();
    let prepared = blocking(move || validate::chat(&req2, &validation.limits())).await?;
    let n = prepared.valid.n;
    let stream = served.engine.submit(prepared.valid)?;
    let prompt_tokens = stream.prompt_tokens();
    let rules = generate::TextRules {
        stops: prepared.stops,
        tool_names: prepared.tool_names,
    };
    let outs = merge(vec![generate::spawn(stream, n, 0, rules)]);
    let meta = Meta {
        id: format!("chatcmpl-{}", rid.0),
        created: unix_now(),
        model: state.model_name().to_string(),
        fingerprint: fingerprint(),
    };
    let logprobs = req.logprobs == Some(true);
    let usage = UsageAcc {
        prompt_tokens,
        ..UsageAcc::default()
    };
    if req.common.stream == Some(true) {
        let enc = ChatEncoder {
            meta,
            n,
            tokenizer: served.tokenizer.clone(),
            logprobs,
            include_usage: req
                .common
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            usage,
        };
        return Ok(sse_response(outs, enc, n));
    }
    let all = collect(outs, n).await?;
    let body = assemble(meta, n, logprobs, usage, all, served.tokenizer.as_deref());
    Ok(Json(body).into_response())
}

fn assemble(
    meta: Meta,
    n: usize,
    logprobs: bool,
    mut usage: UsageAcc,
    all: Vec<Out>,
    tok: Option<&crate::tokenizer::Tokenizer>,
) -> ChatCompletion {
    let mut texts = vec![String::new(); n];
    let mut calls: Vec<Vec<ToolCallBody>> = vec![Vec::new(); n];
    let mut tokens: Vec<Vec<TokenInfo>> = vec![Vec::new(); n];
    let mut reasons: Vec<Option<String>> = vec![None; n];
    for o in all {
        usage.add(&o);
        match o {
            Out::Delta {
                index,
                text,
                tokens: t,
            } if index < n => {
                texts[index].push_str(&text);
                tokens[index].extend(t);
            }
            Out::ToolCall { index, parsed, .. } if index < n => calls[index].push(ToolCallBody {
                id: parsed.id,
                kind: "function",
                function: FunctionCallBody {
                    name: parsed.name,
                    arguments: parsed.arguments,
                },
            }),
            Out::Finish { index, reason, .. } if index < n => {
                reasons[index] = Some(reason.to_string())
            }
            _ => {}
        }
    }
    let choices = texts
        .into_iter()
        .zip(calls)
        .zip(tokens)
        .zip(reasons)
        .enumerate()
        .map(
            |(index, (((content, calls), toks), finish_reason))| ChatChoice {
                index,
                message: ChatMessageBody {
                    role: "assistant",
                    // As OpenAI: content null when the message is calls only.
                    content: (calls.is_empty() || !content.is_empty()).then_some(content),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                },
                logprobs: logprobs.then(|| chat_logprobs(tok, &toks)),
                finish_reason,
            },
        )
        .collect();
    ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        system_fingerprint: meta.fingerprint,
        choices,
        usage: usage.body(),
    }
}
