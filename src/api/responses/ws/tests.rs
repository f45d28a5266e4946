//! The connection machinery over a real socket (axum's server, tokio-tungstenite's client),
//! with a scripted [`Start`] in place of the model: frames, errors, the one-at-a-time rule,
//! the history cache, lifetime, shutdown, pings and cancellation. The real-model tests are in
//! tests/integration/responses_ws.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Msg;

use super::*;

/// Scripted responses: `deltas` text deltas (default 2) `delay_ms` apart (default 1), the
/// completed response's `prior_items` telling how much history it was given; `"model": "x"`
/// is refused as an unknown model. `live` counts event streams not yet dropped.
#[derive(Clone, Default)]
struct Script {
    live: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

/// Decrements the live count when the event stream is dropped.
struct Live(Arc<AtomicUsize>);
impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Start for Script {
    fn start(
        &self,
        body: Map<String, Value>,
        prior: Option<Vec<Value>>,
    ) -> BoxFuture<'static, Result<Run, ApiError>> {
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        let live = self.live.clone();
        async move {
            if body.get("model").and_then(Value::as_str) == Some("x") {
                return Err(ApiError::ModelNotFound("x".into()));
            }
            let id = format!("resp_{n}");
            let deltas = body.get("deltas").and_then(Value::as_u64).unwrap_or(2);
            let delay = body.get("delay_ms").and_then(Value::as_u64).unwrap_or(1);
            let prior_items = prior.as_ref().map_or(0, Vec::len);
            let mut history = prior.unwrap_or_default();
            history.push(json!({"role": "user", "content": body.get("input").cloned()}));
            live.fetch_add(1, Ordering::SeqCst);
            let guard = Live(live);
            let rid = id.clone();
            let events = futures_util::stream::unfold(0u64, move |i| {
                let rid = rid.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let event = match i {
                        0 => json!({"type": "response.created", "sequence_number": 0}),
                        i if i <= deltas => json!({"type": "response.output_text.delta",
                            "sequence_number": i, "delta": "x"}),
                        i if i == deltas + 1 => json!({"type": "response.completed",
                            "sequence_number": i, "response": {"id": rid,
                            "prior_items": prior_items,
                            "output": [{"type": "message", "role": "assistant"}]}}),
                        _ => return None,
                    };
                    Some((event, i + 1))
                }
            })
            .map(move |e| {
                let _ = &guard;
                e
            })
            .boxed();
            Ok(Run {
                id,
                history,
                events,
            })
        }
        .boxed()
    }
}

struct Server {
    url: String,
    script: Script,
    closing: watch::Sender<bool>,
}

async fn server(limits: Limits) -> Server {
    let script = Script::default();
    let (closing, rx) = watch::channel(false);
    let s = script.clone();
    let app = axum::Router::new().route(
        "/v1/responses",
        get(
            move |ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                let (s, rx) = (s.clone(), rx.clone());
                async move { upgrade(ws, s, limits, rx) }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url: format!("ws://{addr}/v1/responses"),
        script,
        closing,
    }
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Client {
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

async fn send(ws: &mut Client, v: Value) {
    ws.send(Msg::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next text frame as JSON (pings skipped), within 5 s.
async fn recv(ws: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .expect("a frame");
        match msg {
            Msg::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Msg::Ping(_) | Msg::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Frames up to and including the terminal one.
async fn until_terminal(ws: &mut Client) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = recv(ws).await;
        let done = v["type"] == "response.completed" || v["type"] == "error";
        out.push(v);
        if done {
            return out;
        }
    }
}

fn create(extra: Value) -> Value {
    let mut v = json!({"type": "response.create", "input": "hi"});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// The close frame's code, within 5 s (text and pings before it skipped).
async fn close_code(ws: &mut Client) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("closed within 5 s");
        match msg {
            Some(Ok(Msg::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn each_event_is_one_frame_and_follow_ups_continue_the_connection_history() {
    let s = server(Limits::default()).await;
    let mut ws = connect(&s.url).await;
    send(&mut ws, create(json!({}))).await;
    let first = until_terminal(&mut ws).await;
    let types: Vec<_> = first
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    let id = first[3]["response"]["id"].as_str().expect("id").to_string();
    assert_eq!(first[3]["response"]["prior_items"], 0);
    send(&mut ws, create(json!({"previous_response_id": id}))).await;
    let second = until_terminal(&mut ws).await;
    // The first turn's input and its output item.
    assert_eq!(
        second.last().expect("terminal")["response"]["prior_items"],
        2
    );
    let id2 = second.last().expect("terminal")["response"]["id"].clone();
    send(&mut ws, create(json!({"previous_response_id": id2}))).await;
    let third = until_terminal(&mut ws).await;
    assert_eq!(
        third.last().expect("terminal")["response"]["prior_items"],
        4
    );
    // An id this connection never saw is left to the store (no prior).
    send(
        &mut ws,
        create(json!({"previous_response_id": "resp_elsewhere"})),
    )
    .await;
    let other = until_terminal(&mut ws).await;
    assert_eq!(
        other.last().expect("terminal")["response"]["prior_items"],
        0
    );
}

#[tokio::test]
async fn a_second_create_while_one_runs_is_refused_and_the_first_completes() {
    let s = server(Limits::default()).await;
    let mut ws = connect(&s.url).await;
    send(&mut ws, create(json!({"deltas": 20, "delay_ms": 20}))).await;
    assert_eq!(recv(&mut ws).await["type"], "response.created");
    send(&mut ws, create(json!({}))).await;
    let mut refused = None;
    let last = loop {
        let v = recv(&mut ws).await;
        if v["type"] == "error" {
            refused = Some(v);
            continue;
        }
        if v["type"] == "response.completed" {
            break v;
        }
    };
    let refused = refused.expect("an error event for the second create");
    assert_eq!(
        refused["error"]["code"],
        "conversation_already_has_active_response"
    );
    assert_eq!(refused["status"], 400);
    assert_eq!(last["response"]["id"], "resp_0");
    assert_eq!(s.script.started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_frames_get_error_events_and_the_connection_stays_usable() {
    let s = server(Limits::default()).await;
    let mut ws = connect(&s.url).await;
    let cases: Vec<(Msg, u16, &str, Value)> = vec![
        (
            Msg::Text("{not json".into()),
            400,
            "invalid_json",
            Value::Null,
        ),
        (
            Msg::Binary(vec![1, 2, 3].into()),
            400,
            "invalid_json",
            Value::Null,
        ),
        (
            Msg::Text("[1, 2]".into()),
            400,
            "invalid_event",
            json!("type"),
        ),
        (
            Msg::Text(json!({"type": "response.steer"}).to_string().into()),
            400,
            "unknown_event_type",
            json!("type"),
        ),
        (
            Msg::Text(create(json!({"stream": true})).to_string().into()),
            400,
            "unsupported_parameter",
            json!("stream"),
        ),
        (
            Msg::Text(create(json!({"background": true})).to_string().into()),
            400,
            "unsupported_parameter",
            json!("background"),
        ),
        (
            Msg::Text(
                create(json!({"pad": "x".repeat(MAX_MESSAGE_BYTES)}))
                    .to_string()
                    .into(),
            ),
            413,
            "message_too_large",
            Value::Null,
        ),
    ];
    for (msg, status, code, param) in cases {
        ws.send(msg).await.expect("send");
        let e = recv(&mut ws).await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["status"], status, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(e["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A start the Responses API refuses: its HTTP status, type, code and param.
    send(&mut ws, create(json!({"model": "x"}))).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["status"], 404);
    assert_eq!(e["error"]["code"], "model_not_found");
    assert_eq!(e["error"]["param"], "model");
    // `stream: false` asks for nothing the socket lacks; the connection still works.
    send(&mut ws, create(json!({"stream": false}))).await;
    let ok = until_terminal(&mut ws).await;
    assert_eq!(ok.last().expect("terminal")["type"], "response.completed");
}

#[tokio::test]
async fn a_closed_connection_drops_its_running_response() {
    let s = server(Limits::default()).await;
    let mut ws = connect(&s.url).await;
    send(&mut ws, create(json!({"deltas": 1000, "delay_ms": 10}))).await;
    assert_eq!(recv(&mut ws).await["type"], "response.created");
    assert_eq!(s.script.live.load(Ordering::SeqCst), 1);
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.script.live.load(Ordering::SeqCst) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "events still held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_lifetime_ends_with_an_error_event_and_close_1000_after_the_running_response() {
    let limits = Limits {
        lifetime: Duration::from_millis(150),
        ..Limits::default()
    };
    let s = server(limits).await;
    let mut ws = connect(&s.url).await;
    send(&mut ws, create(json!({"deltas": 30, "delay_ms": 10}))).await;
    let events = until_terminal(&mut ws).await;
    assert_eq!(
        events.last().expect("terminal")["type"],
        "response.completed"
    );
    let e = recv(&mut ws).await;
    assert_eq!(e["error"]["code"], "websocket_connection_limit_reached");
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn server_shutdown_closes_with_1001_and_cancels() {
    let s = server(Limits::default()).await;
    let mut ws = connect(&s.url).await;
    send(&mut ws, create(json!({"deltas": 1000, "delay_ms": 10}))).await;
    assert_eq!(recv(&mut ws).await["type"], "response.created");
    s.closing.send_replace(true);
    assert_eq!(close_code(&mut ws).await, Some(1001));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.script.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_server_pings_and_answers_pings() {
    let limits = Limits {
        ping_every: Duration::from_millis(50),
        ..Limits::default()
    };
    let s = server(limits).await;
    let mut ws = connect(&s.url).await;
    ws.send(Msg::Ping(b"hello".to_vec().into()))
        .await
        .expect("send");
    let (mut pinged, mut ponged) = (false, false);
    while !(pinged && ponged) {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("frame");
        match msg {
            Msg::Ping(_) => pinged = true,
            Msg::Pong(p) => ponged = p.as_ref() == b"hello",
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_past_the_hard_limit_closes_with_1009() {
    let limits = Limits {
        hard_message_bytes: 2 << 20,
        ..Limits::default()
    };
    let s = server(limits).await;
    let mut ws = connect(&s.url).await;
    let big = create(json!({"pad": "x".repeat(3 << 20)})).to_string();
    ws.send(Msg::Text(big.into())).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn a_plain_get_is_refused_in_the_openai_envelope() {
    let s = server(Limits::default()).await;
    let url = s.url.replace("ws://", "http://");
    let r = reqwest::get(&url).await.expect("request");
    assert!(
        matches!(r.status().as_u16(), 400 | 405 | 426),
        "{}",
        r.status()
    );
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("WebSocket")));
}

#[test]
fn the_history_cache_keeps_the_newest_entries() {
    let mut h = frames::History::new(2);
    h.put("a".into(), vec![json!(1)]);
    h.put("b".into(), vec![json!(2)]);
    h.put("c".into(), vec![json!(3)]);
    assert_eq!(h.get("a"), None);
    assert_eq!(h.get("b"), Some(vec![json!(2)]));
    assert_eq!(h.get("c"), Some(vec![json!(3)]));
}

#[test]
fn a_failed_response_is_not_continued() {
    let failed = json!({"type": "response.failed", "response": {"output": []}});
    assert_eq!(frames::continued(&[json!(1)], &failed), None);
    let incomplete = json!({"type": "response.incomplete",
        "response": {"output": [json!(2)]}});
    assert_eq!(
        frames::continued(&[json!(1)], &incomplete),
        Some(vec![json!(1), json!(2)])
    );
}
