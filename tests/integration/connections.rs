//! Connection limits of the server's accept loop (issue 10): a request head past the size limit
//! gets 431, a client that does not finish its head (or an idle kept-alive connection) is
//! closed after the header read timeout, and past the connection limit a new client waits
//! until a connection closes. The server answers normally after each.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wick::api::{AppState, ConnLimits, HttpOptions};

use crate::common::{tiny_config, tiny_served, TestServer};

async fn server(connections: ConnLimits) -> TestServer {
    let state = AppState::with_options(
        "tiny",
        HttpOptions {
            connections,
            ..HttpOptions::default()
        },
    );
    state.set_ready(tiny_served(tiny_config()));
    TestServer::start(state).await
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (or 30 s pass: a failure).
async fn read_to_close(sock: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), sock.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    out
}

async fn healthy(server: &TestServer) -> bool {
    reqwest::get(format!("{}/health/live", server.url))
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_431() {
    let server = server(ConnLimits {
        max_header_bytes: 16 << 10,
        ..ConnLimits::default()
    })
    .await;
    let mut sock = connect(&server).await;
    let big = "a".repeat(20 << 10);
    let head = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    // The server may answer and close before it has read all of it.
    let _ = sock.write_all(head.as_bytes()).await;
    let answer = read_to_close(&mut sock).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // Under the limit, the same route answers.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/models", server.url))
        .header("x-big", "a".repeat(8 << 10))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_idle_client_is_closed_after_the_header_timeout() {
    let server = server(ConnLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ConnLimits::default()
    })
    .await;
    // Half a head, then nothing.
    let mut slow = connect(&server).await;
    slow.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // Nothing at all.
    let mut idle = connect(&server).await;
    for sock in [&mut slow, &mut idle] {
        let answer = read_to_close(sock).await;
        let text = String::from_utf8_lossy(&answer);
        // Closed, with nothing or a 408 said.
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    // A kept-alive connection is closed once idle past the timeout too.
    let mut kept = connect(&server).await;
    kept.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut kept).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(healthy(&server).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_a_client_waits_for_a_free_one() {
    let server = server(ConnLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(60),
        ..ConnLimits::default()
    })
    .await;
    // Two idle connections hold both slots (the server has accepted them once it answers on
    // them: one request each, kept alive).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&server).await;
        s.write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let third = tokio::spawn({
        let url = server.url.clone();
        async move {
            reqwest::get(format!("{url}/health/live"))
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served");
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .expect("served once a slot is free")
        .expect("task")
        .expect("request");
    assert_eq!(status, 200);
    server.stop().await;
}
