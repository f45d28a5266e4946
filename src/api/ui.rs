//! The built-in web page (chat and dashboard): `GET /` and `GET /ui` serve its `index.html`,
//! `GET /ui/{*path}` its other files (`/ui/assets/...`, named by content hash). The files are
//! embedded at build time by `build.rs` (from `web/`); a binary built without Node.js serves
//! a short page that says what is missing and how to build it. Public routes (no API key:
//! the page asks for one and sends it with each API call); off with `--no-ui`.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
//! only, nothing inline; connections to this origin, its WebSocket included), `nosniff` and no
//! framing. `index.html` is `no-cache`; hashed assets are immutable for a year.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::AppState;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The paths the page is served at (all public: see `AuthConfig::is_public`).
pub const PATHS: &[&str] = &["/", "/ui", "/ui/", "/ui/{*path}"];

/// Whether `path` is one of the page's (so it needs no API key).
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// `router` with the page's routes.
pub fn mount(router: Router<AppState>) -> Router<AppState> {
    router
        .route(PATHS[0], get(index))
        .route(PATHS[1], get(index))
        .route(PATHS[2], get(index))
        .route(PATHS[3], get(asset))
}

/// The embedded file at `path` (relative to the dist folder).
fn find(path: &str) -> Option<&'static [u8]> {
    UI_ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

/// The policy: this origin only; `connect-src` names the WebSocket origin of `host` too (a
/// browser's `'self'` did not always cover `ws:`).
fn csp(host: Option<&str>) -> String {
    let ws = host
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src 'self'{ws}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") | Some("map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A file's response with its type, caching and the security headers.
fn file(headers: &HeaderMap, path: &str, body: &'static [u8], cache: &'static str) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&csp(host)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The page written when the binary was built without the web page.
fn missing_page() -> &'static [u8] {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>wick: the web page is not built</title></head><body>\
             <h1>wick is running; its web page was not built into this binary</h1>\
             <p>Why: {}.</p><p>Install Node.js 20 or later (with npm) and rebuild \
             (<code>cargo build --release</code>: the build runs npm), or build the page by \
             hand with <code>{}</code> and then rebuild. The API is served as usual under \
             <code>/v1</code>.</p></body></html>",
            escape(UI_MISSING),
            escape(UI_BUILD_COMMAND)
        )
    })
    .as_bytes()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /`, `GET /ui`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    let body = find("index.html").unwrap_or_else(missing_page);
    file(&headers, "index.html", body, "no-cache")
}

/// `GET /ui/{*path}`: one of the page's files; 404 in the API's envelope for anything else.
pub async fn asset(headers: HeaderMap, Path(path): Path<String>) -> Response {
    match find(&path) {
        Some(body) if path.starts_with("assets/") => {
            file(&headers, &path, body, "public, max-age=31536000, immutable")
        }
        Some(body) => file(&headers, &path, body, "no-cache"),
        None => ApiError::NotFound {
            message: format!("the web page has no file {path:?}"),
            param: None,
            code: Some("not_found"),
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_this_origin_only_and_its_websocket() {
        let p = csp(Some("127.0.0.1:8080"));
        assert!(p.starts_with("default-src 'self'; script-src 'self'; style-src 'self'"));
        assert!(p.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(!p.contains("unsafe"));
        // A Host header that could break out of the policy is left out.
        let p = csp(Some("evil; script-src *"));
        assert!(p.contains("connect-src 'self'; object-src"));
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("assets/index-abc.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }

    #[test]
    fn the_page_paths_are_the_ui_ones() {
        for p in ["/", "/ui", "/ui/", "/ui/assets/a.js"] {
            assert!(is_ui_path(p), "{p}");
        }
        for p in ["/v1/models", "/uix", "/metrics", ""] {
            assert!(!is_ui_path(p), "{p}");
        }
    }
}
