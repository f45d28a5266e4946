//! `GET /openapi.json`: the OpenAPI 3.1 document of this server, for clients, code generators
//! and fuzzers. Built from the handlers' `#[utoipa::path]` attributes and the wire types'
//! `ToSchema` derives (the same serde attributes the server reads and writes with), then fitted
//! to the server's key configuration by [`document`]: with keys configured, every operation
//! that `AuthConfig::is_public` does not open asks for one (`Authorization: Bearer` or
//! `x-api-key`) and documents the 401; with none, no operation asks for a key.
//!
//! The document itself needs a key like the API routes (it is not a probe: only `/health*`
//! and, by default, `/metrics` are public). Built per request on the HTTP task (it is small);
//! `tests` check it against [`super::routes`], the router's own list.

use axum::extract::State;
use axum::Json;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, SecurityRequirement};
use utoipa::OpenApi;

use super::auth::AuthConfig;
use super::error::ErrorEnvelope;
use super::openai::ChatCompletionChunk;
use super::{
    chat, completions, conversations, embeddings, health, metrics, models, responses, tokenize,
    usage, AppState,
};

/// The security scheme of `Authorization: Bearer KEY`.
pub const BEARER: &str = "bearer";
/// The security scheme of `x-api-key: KEY`.
pub const API_KEY: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wick",
        description = "wick's OpenAI-compatible API (chat, completions, embeddings, models) \
            with vLLM's and llama.cpp's tokenize routes and the operations routes. Unknown \
            request fields are ignored; integer fields take integers only (`8`, not `8.0`); \
            the body is read as JSON whatever its content type. Every error is the OpenAI \
            envelope `ErrorEnvelope`; 429 and 503 carry `Retry-After`; every response \
            carries `x-request-id`."
    ),
    paths(
        chat::handle,
        completions::handle,
        embeddings::handle,
        models::list,
        models::get_one,
        tokenize::tokenize,
        tokenize::detokenize,
        health::health,
        health::live,
        health::ready,
        metrics::scrape,
        usage::handle,
        responses::create,
        responses::ws::connect,
        responses::background::cancel,
        serve,
        responses::stored::get_response,
        responses::stored::delete_response,
        responses::stored::input_items,
        conversations::create,
        conversations::list,
        conversations::get_one,
        conversations::update,
        conversations::delete,
        conversations::add_items,
        conversations::list_items,
        conversations::get_item,
        conversations::delete_item,
    ),
    components(schemas(ChatCompletionChunk, ErrorEnvelope), responses(ErrorEnvelope)),
    tags(
        (name = "openai", description = "OpenAI's API."),
        (name = "tokenize", description = "vLLM's and llama.cpp's tokenizer routes."),
        (name = "operations", description = "Health, metrics and this document."),
        (name = "wick", description = "wick's extensions of OpenAI's API."),
    ),
)]
struct ApiDoc;

/// The document for a server with the keys and public paths of `auth`.
pub fn document(auth: &AuthConfig) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer KEY` (what OpenAI's clients send).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "`x-api-key: KEY`.",
            ))),
        );
    }
    let limited = auth.keys.limits().any(|(_, l)| !l.is_unlimited());
    for (path, item) in doc.paths.paths.iter_mut() {
        let guarded = !auth.is_open() && !auth.is_public(path);
        for op in operations_mut(item) {
            // A handler that panics is caught and answered 500, on any route.
            add_error(op, "500");
            if guarded {
                op.security = Some(vec![
                    SecurityRequirement::new(BEARER, Vec::<String>::new()),
                    SecurityRequirement::new(API_KEY, Vec::<String>::new()),
                ]);
                add_error(op, "401");
                // A key past one of its limits (`api::limits`).
                if limited {
                    add_error(op, "429");
                }
            }
        }
    }
    doc
}

/// The operations of a path, each method's.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Documents `status` as an error in the envelope, unless the operation already does.
fn add_error(op: &mut Operation, status: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("ErrorEnvelope")));
}

/// This document, fitted to the server's keys.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = Object)),
)]
pub async fn serve(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(&state.auth()))
}

#[cfg(test)]
mod tests;
