//! One WebSocket connection's loop, on the tokio task axum spawns for the upgraded socket:
//! read client frames, start at most one response at a time through a [`Start`], forward its
//! events as JSON text frames, ping the client, and close the socket at the end of its
//! lifetime (1000) or when the server shuts down (1001). It never blocks: everything it waits
//! on is one `select!`. Dropping the running response's events (the client gone, the server
//! closing) cancels its engine request, so its KV blocks are freed at the worker's next step.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{Instant, Interval};

use super::frames::{self, History, WsError};
use super::{Limits, Run, Start};
use crate::api::error::ApiError;

/// What a running response hands the loop.
enum Out {
    /// It was accepted: its id and the items its prompt was built from.
    Started { id: String, history: Vec<Value> },
    /// One server event, to send as one frame.
    Event(Value),
    /// It could not start.
    Refused(ApiError),
}

/// The response this connection runs, if any.
struct Running {
    id: Option<String>,
    history: Vec<Value>,
    out: BoxStream<'static, Out>,
}

/// How the loop ended: the close frame to send, if the socket is still there to take one.
type Ending = Option<CloseFrame>;

fn close(code: u16, reason: &str) -> Ending {
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

/// Serves `socket` until the client leaves, its lifetime ends or `closing` turns true.
pub async fn serve<S: Start>(
    mut socket: WebSocket,
    start: S,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    let mut conn = Conn {
        start,
        limits,
        history: History::new(limits.history_entries),
        running: None,
        expired: false,
    };
    if let Some(frame) = conn.run(&mut socket, &mut closing).await {
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
}

struct Conn<S> {
    start: S,
    limits: Limits,
    history: History,
    running: Option<Running>,
    /// The lifetime is over: no new responses; the socket closes once the running one ends.
    expired: bool,
}

impl<S: Start> Conn<S> {
    async fn run(&mut self, socket: &mut WebSocket, closing: &mut watch::Receiver<bool>) -> Ending {
        let mut ping = interval(self.limits.ping_every);
        let lifetime = tokio::time::sleep(self.limits.lifetime);
        tokio::pin!(lifetime);
        loop {
            tokio::select! {
                () = until_true(closing) => return close(1001, "the server is shutting down"),
                () = &mut lifetime, if !self.expired => {
                    self.expired = true;
                    if self.running.is_none() {
                        return self.expire(socket).await;
                    }
                }
                msg = socket.recv() => match msg {
                    Some(Ok(msg)) => {
                        if !self.on_message(socket, msg).await {
                            return None;
                        }
                    }
                    // Gone, or past the message limit that keeps one client from holding
                    // the server's memory (the socket cannot be read on after it).
                    Some(Err(e)) => return read_error(&e),
                    None => return None,
                },
                out = next(&mut self.running) => match out {
                    Some(out) => {
                        if !self.on_out(socket, out).await {
                            return None;
                        }
                        if self.running.is_none() && self.expired {
                            return self.expire(socket).await;
                        }
                    }
                    None => {
                        self.running = None;
                        if self.expired {
                            return self.expire(socket).await;
                        }
                    }
                },
                _ = ping.tick() => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// A client frame; `false` when the socket is gone.
    async fn on_message(&mut self, socket: &mut WebSocket, msg: Message) -> bool {
        let body = match msg {
            Message::Text(text) => frames::parse(text.as_str(), self.limits.max_message_bytes),
            Message::Binary(b) if b.len() > self.limits.max_message_bytes => {
                Err(WsError::TooLarge {
                    size: b.len(),
                    limit: self.limits.max_message_bytes,
                })
            }
            Message::Binary(_) => Err(WsError::Binary),
            // tungstenite answers pings itself; a close is answered by the library too, and
            // the next read ends the loop.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return true,
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => return send(socket, &e.event()).await,
        };
        if let Some(running) = &self.running {
            let id = running.id.clone().unwrap_or_else(|| "starting".into());
            return send(socket, &WsError::Busy(id).event()).await;
        }
        if self.expired {
            return send(socket, &limit_reached()).await;
        }
        let prior = self.history.prior(&body);
        self.running = Some(Running {
            id: None,
            history: Vec::new(),
            out: outputs(self.start.start(body, prior)),
        });
        true
    }

    /// One output of the running response; `false` when the socket is gone.
    async fn on_out(&mut self, socket: &mut WebSocket, out: Out) -> bool {
        let Some(running) = self.running.as_mut() else {
            return true;
        };
        match out {
            Out::Started { id, history } => {
                running.id = Some(id);
                running.history = history;
                true
            }
            Out::Event(event) => {
                if frames::is_terminal(&event) {
                    if let (Some(id), Some(items)) = (
                        running.id.clone(),
                        frames::continued(&running.history, &event),
                    ) {
                        self.history.put(id, items);
                    }
                    // The turn is over once its terminal event goes out: a create sent right
                    // after it must not find the connection busy.
                    self.running = None;
                }
                send(socket, &event).await
            }
            Out::Refused(e) => {
                self.running = None;
                send(socket, &frames::api_error_event(&e)).await
            }
        }
    }

    /// The lifetime is over and nothing runs: say so, then close normally.
    async fn expire(&mut self, socket: &mut WebSocket) -> Ending {
        if !send(socket, &limit_reached()).await {
            return None;
        }
        close(1000, "the connection reached its 60-minute limit")
    }
}

/// OpenAI's error for a connection past its lifetime.
fn limit_reached() -> Value {
    frames::error_event(
        400,
        "invalid_request_error",
        Some("websocket_connection_limit_reached"),
        "this connection reached its lifetime limit; open a new one to continue",
        None,
    )
}

/// A read error: past the hard message limit the socket is closed with 1009 (message too
/// big); any other error means the socket is gone.
fn read_error(e: &axum::Error) -> Ending {
    let text = e.to_string();
    tracing::debug!(error = %text, "websocket read failed");
    if text.contains("Space limit exceeded") || text.contains("too long") {
        return close(1009, "message too big");
    }
    None
}

/// Sends one event as a text frame; `false` when the socket is gone.
async fn send(socket: &mut WebSocket, event: &Value) -> bool {
    socket
        .send(Message::Text(event.to_string().into()))
        .await
        .is_ok()
}

/// The running response's next output; never ready when nothing runs.
async fn next(running: &mut Option<Running>) -> Option<Out> {
    match running {
        Some(r) => r.out.next().await,
        None => std::future::pending().await,
    }
}

/// Resolves once `rx` holds `true`; never if its sender goes away first.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    loop {
        let now = *rx.borrow_and_update();
        if now {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A ping timer whose first tick is one period away.
fn interval(every: Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + every, every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// A start future as the loop's outputs: `Started` and the events, or one `Refused`.
fn outputs(
    started: futures_util::future::BoxFuture<'static, Result<Run, ApiError>>,
) -> BoxStream<'static, Out> {
    stream::once(started)
        .flat_map(|r| match r {
            Ok(run) => {
                let head = Out::Started {
                    id: run.id,
                    history: run.history,
                };
                stream::once(async move { head })
                    .chain(run.events.map(Out::Event))
                    .boxed()
            }
            Err(e) => stream::once(async move { Out::Refused(e) }).boxed(),
        })
        .boxed()
}
