//! Serving the router on a bound listener: the one place `axum::serve` is called, so that the
//! command layer starts the HTTP server without touching axum. Runs as a tokio task of the
//! caller's runtime; connections are served on further tasks.

use std::future::Future;

use super::{router, AppState};

/// Serves [`router`]`(state)` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With the peer's address, for the access log.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
