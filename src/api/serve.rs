//! Serving the router on a bound listener: the accept loop, so that the command layer starts
//! the HTTP server without touching axum or hyper. Runs as a tokio task of the caller's
//! runtime; each connection is served on a task of its own by hyper's HTTP/1 server with the
//! [`ConnLimits`]: at most `max_connections` open at once (past it, new ones wait in the
//! kernel's listen backlog), a request head read within `header_read_timeout` (an idle
//! kept-alive connection is closed after it too) and at most `max_header_bytes` long (431
//! past it). On shutdown the loop stops accepting and waits for the open connections to finish
//! their requests. Connections are served with upgrades (the Responses WebSocket mode); an
//! upgraded socket is told to close (1001) through [`AppState::closing`] as well, and the
//! shutdown waits for it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::{router, AppState};

/// Limits on client connections, so that slow or idle clients cannot exhaust the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a client has to send a request head; also how long a kept-alive connection
    /// may sit idle between requests.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 << 10,
        }
    }
}

/// A connection's `--max-connections` place, in each of its requests' extensions: a handler
/// that takes the connection over (the WebSocket upgrade) keeps a clone, so that the place is
/// given back when the socket closes, not when its HTTP part ends.
#[derive(Clone, Debug)]
pub struct ConnSlot(pub Arc<tokio::sync::OwnedSemaphorePermit>);

/// hyper's buffer can be no smaller than this; the head limit is held to it.
const MIN_BUF: usize = 8192;

/// Serves [`router`]`(state)` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish their requests (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.options().connections;
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes.max(1))
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF) + MIN_BUF);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = accept(&listener, &slots) => a,
        };
        let Some((stream, peer, slot)) = accepted else {
            continue;
        };
        let app = app.clone();
        let slot = ConnSlot(Arc::new(slot));
        let held = slot.clone();
        // The peer's address, for the access log (what `into_make_service_with_connect_info`
        // gives axum's own server).
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(held.clone());
            let app = app.clone();
            async move {
                let resp: Result<_, Infallible> = app.oneshot(req.map(axum::body::Body::new)).await;
                resp
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut closing = state.closing();
        tokio::spawn(async move {
            // Once closing, idle kept-alive connections close and busy ones finish their
            // request first (hyper's graceful shutdown).
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = closing.wait_for(|c| *c).map(|_| ()) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            drop(closing);
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    state.close_connections().await;
    Ok(())
}

/// The next connection, once a slot is free; `None` for an accept error (logged; a full file
/// table is waited out briefly rather than spun on).
async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer, slot))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
