//! The HTTP boundary: axum lives only here. [`router`] builds the OpenAI-compatible routes over
//! an [`AppState`]; tests call it directly.
//!
//! A request's path: [`extract::OpenAiJson`] parses the body and checks the model;
//! [`validate`] turns it into the engine's token-id request on `spawn_blocking`; the engine
//! returns an event stream; the endpoint's state machine ([`chat::ChatStream`],
//! [`completions::CompletionStream`]), with one [`choice_text::ChoiceText`] per choice for
//! detokenizing, stop strings and tool calls, turns events into chunks that [`stream`] writes
//! as SSE or folds into one JSON body. Handlers run on tokio tasks; the engine worker only ever
//! sees token ids.
//!
//! Layers, each using only those before it: `openai` (wire types) -> `validate` ->
//! `stop`, `tool_parse`, `logprobs` -> `choice_text` -> `stream` -> the route files ->
//! this router. `error`, `state` (with `registry`: the served models, loaded on use) and
//! `metrics` are shared by all (`stream` records into
//! `metrics`; the router serves it); `auth`, `limits` and `access` are middlewares of the
//! router (handlers reserve tokens with [`limits::reserve`]; `access` also queues each model
//! request's usage row, and `usage` serves their totals). [`routes`] is the one list of
//! routes: the router is built from it, and `openapi` (the `/openapi.json` document) is
//! checked against it.

pub mod access;
pub mod auth;
pub mod chat;
pub mod choice_text;
pub mod completions;
pub mod conversations;
pub mod embeddings;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod logprobs;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod registry;
pub mod responses;
mod serve;
mod state;
pub mod stop;
pub mod stream;
pub mod tokenize;
pub mod tool_parse;
pub mod trace;
pub mod ui;
pub mod usage;
pub mod validate;

use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use error::ApiError;
pub use serve::{serve, ConnLimits};
pub use state::{unix_now, AppState, HttpOptions, Served};

/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

/// One route: its method, its path in axum's syntax (`{*id}` for a rest-of-path parameter)
/// and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn get<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        let handler = get(handler);
        Self {
            method: Method::GET,
            path,
            handler,
        }
    }

    fn post<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        let handler = post(handler);
        Self {
            method: Method::POST,
            path,
            handler,
        }
    }

    fn delete<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        let handler = delete(handler);
        Self {
            method: Method::DELETE,
            path,
            handler,
        }
    }
}

/// Every route the server answers, the one list: [`router`] is built from it, and the OpenAPI
/// document's test checks that each one is documented and nothing else is.
pub fn routes() -> Vec<Route> {
    vec![
        Route::post("/v1/chat/completions", chat::handle),
        Route::post("/v1/completions", completions::handle),
        Route::post("/v1/embeddings", embeddings::handle),
        Route::get("/v1/models", models::list),
        Route::get("/v1/models/{*id}", models::get_one),
        Route::post("/tokenize", tokenize::tokenize),
        Route::post("/detokenize", tokenize::detokenize),
        Route::get("/health", health::health),
        Route::get("/health/live", health::live),
        Route::get("/health/ready", health::ready),
        Route::get("/metrics", metrics::scrape),
        Route::get("/v1/usage", usage::handle),
        Route::post("/v1/responses", responses::create),
        Route::get("/v1/responses", responses::ws::connect),
        Route::post("/v1/responses/{id}/cancel", responses::cancel),
        Route::get("/openapi.json", openapi::serve),
        Route::get("/v1/responses/{id}", responses::stored::get_response),
        Route::delete("/v1/responses/{id}", responses::stored::delete_response),
        Route::get(
            "/v1/responses/{id}/input_items",
            responses::stored::input_items,
        ),
        Route::post("/v1/conversations", conversations::create),
        Route::get("/v1/conversations", conversations::list),
        Route::get(
            "/v1/conversations/{conversation_id}",
            conversations::get_one,
        ),
        Route::post("/v1/conversations/{conversation_id}", conversations::update),
        Route::delete("/v1/conversations/{conversation_id}", conversations::delete),
        Route::post(
            "/v1/conversations/{conversation_id}/items",
            conversations::add_items,
        ),
        Route::get(
            "/v1/conversations/{conversation_id}/items",
            conversations::list_items,
        ),
        Route::get(
            "/v1/conversations/{conversation_id}/items/{item_id}",
            conversations::get_item,
        ),
        Route::delete(
            "/v1/conversations/{conversation_id}/items/{item_id}",
            conversations::delete_item,
        ),
    ]
}

/// An error in the envelope with another status than the table's (the table has no row for
/// these: they are the router's own answers).
fn routing_error(status: StatusCode, message: &str) -> Response {
    let mut r = ApiError::invalid(message, None).into_response();
    *r.status_mut() = status;
    r
}

/// The routes, with body limit, API keys ([`auth::require_key`], before any body is read),
/// per-key limits ([`limits::enforce`], inside it),
/// panic catching, `x-request-id`, request counting (outside those, so that a caught panic's
/// 500 and a 401 are counted too) and, when origins are configured, CORS.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes();
    let auth = state.auth();
    let cors = cors(&state.options().cors_allow_origins);
    let api = routes()
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.path, route.handler));
    // The page's routes are explicit routes too (not the fallback), outside `routes()`: they
    // are not API operations, so the OpenAPI document leaves them out.
    let api = if state.options().ui {
        ui::mount(api)
    } else {
        api
    };
    let routes = api
        .fallback(|| async { routing_error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            routing_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_key,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::log,
        ))
        .layer(axum::middleware::from_fn(request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state);
    // Outermost, so that a browser's preflight is answered before anything else runs.
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
}

/// The CORS layer for `origins` (`*`: any); `None` when there are none (or none is a valid
/// header value: `wick serve` checks them at start).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if list.is_empty() {
            return None;
        }
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal("internal error".into()).into_response()
}

/// The request's id, echoed from `x-request-id` or generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A new response id: `prefix` and 128 random bits. Not the request id, which a client may
/// send again (a retry reusing `x-request-id`): ids are unique per response.
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Runs CPU work (templates, tokenization, grammar compilation) off the async threads.
pub async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("a blocking task failed: {e}")))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_gets_500_and_the_server_lives_on() {
        let app: Router = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("handler bug");
                    }
                    "unreachable"
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/boom", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        for _ in 0..2 {
            let r = reqwest::get(&url).await.expect("the server answers");
            assert_eq!(r.status().as_u16(), 500);
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(v["error"]["type"], "server_error");
        }
        server.abort();
    }
}
