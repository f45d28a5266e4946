//! `/v1/embeddings`, `echo` with prompt logprobs on `/v1/completions`, and disconnects that
//! happen while nothing is being written (queued requests), in process with reqwest.

use std::time::{Duration, Instant};

use candle_core::Device;
use serde_json::{json, Value};
use wick::api::AppState;

use crate::common::{post, real_server_url, sse_data, tiny_config, tiny_served, Slow, TestServer};

async fn status_and_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a float") as f32)
        .collect()
}

fn decode_base64_f32(s: &str) -> Vec<f32> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut bytes = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk.iter().take_while(|&&c| c != b'=').count();
        let mut acc = 0u32;
        for (i, &c) in chunk[..n].iter().enumerate() {
            acc |= u32::from(val(c)) << (18 - 6 * i);
        }
        bytes.extend(acc.to_be_bytes()[1..n].iter());
    }
    bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_float_and_base64_and_their_errors() {
    let state = AppState::new("tiny", 4096);
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    let url = format!("{}/v1/embeddings", server.url);
    let (status, v) = status_and_json(
        post(
            &url,
            json!({"input": [[1, 2, 3], [4, 5], [1, 2, 3]], "model": "tiny"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "tiny");
    assert_eq!(v["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    let vecs: Vec<Vec<f32>> = data.iter().map(|d| floats(&d["embedding"])).collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        let norm: f32 = vecs[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    assert_eq!(vecs[0], vecs[2]);
    assert!(max_diff(&vecs[0], &vecs[1]) > 1e-3);
    let (_, b) = status_and_json(
        post(
            &url,
            json!({"input": [1, 2, 3], "encoding_format": "base64", "dimensions": vecs[0].len()}),
        )
        .await,
    )
    .await;
    let decoded = decode_base64_f32(b["data"][0]["embedding"].as_str().expect("base64"));
    assert_eq!(decoded, vecs[0], "base64 is the little-endian f32 bytes");
    let errors = [
        (json!({"input": []}), 400, "input"),
        (json!({"input": [[1], []]}), 400, "input"),
        (json!({"input": ["text", ""]}), 400, "input"),
        (json!({"input": [1], "dimensions": 7}), 400, "dimensions"),
        (
            json!({"input": [1], "encoding_format": "int8"}),
            400,
            "encoding_format",
        ),
        (json!({"input": [1], "model": "other"}), 404, "model"),
        (json!({"input": [100000]}), 400, "input"),
        (json!({"input": vec![1; 600]}), 400, "input"),
        (json!({"inputs": [1]}), 400, ""),
    ];
    for (body, want, param) in errors {
        let (status, v) = status_and_json(post(&url, body.clone()).await).await;
        assert_eq!(status, want, "{body}: {v}");
        if !param.is_empty() {
            assert_eq!(v["error"]["param"], param, "{body}: {v}");
        }
    }
    let (_, v) = status_and_json(post(&url, json!({"input": vec![1; 600]})).await).await;
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "input", "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_embeddings_batch_equals_alone() {
    let Some(url) = real_server_url() else { return };
    let url = format!("{url}/v1/embeddings");
    let texts = [
        "The cat sat on the mat.",
        "Quantum chromodynamics",
        "The cat sat on the mat.",
    ];
    let (status, v) = status_and_json(post(&url, json!({"input": texts})).await).await;
    assert_eq!(status, 200, "{v}");
    let batch: Vec<Vec<f32>> = (0..3).map(|i| floats(&v["data"][i]["embedding"])).collect();
    assert_eq!(batch[0].len(), 576, "SmolLM2-135M's hidden size");
    assert_eq!(batch[0], batch[2]);
    assert!(max_diff(&batch[0], &batch[1]) > 1e-3);
    for (text, b) in texts.iter().zip(&batch) {
        let (_, v) = status_and_json(post(&url, json!({"input": text})).await).await;
        let alone = floats(&v["data"][0]["embedding"]);
        assert!(max_diff(&alone, b) < 1e-5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_echo_with_prompt_logprobs() {
    let Some(url) = real_server_url() else { return };
    let url = format!("{url}/v1/completions");
    let prompt = "The capital of France is";
    // Scoring only: max_tokens 0.
    let (status, v) = status_and_json(
        post(
            &url,
            json!({"prompt": prompt, "echo": true, "logprobs": 2, "max_tokens": 0}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["text"], prompt);
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    let lp = &c["logprobs"];
    let n = v["usage"]["prompt_tokens"].as_u64().expect("n") as usize;
    assert!(n >= 4);
    assert_eq!(lp["tokens"].as_array().map(Vec::len), Some(n));
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    for i in 1..n {
        assert!(lp["token_logprobs"][i].as_f64().expect("logprob") <= 0.0);
        assert_eq!(lp["top_logprobs"][i].as_object().map(|m| m.len()), Some(2));
    }
    let joined: String = (0..n)
        .map(|i| lp["tokens"][i].as_str().expect("token"))
        .collect();
    assert_eq!(joined, prompt);
    let offsets: Vec<u64> = (0..n)
        .map(|i| lp["text_offset"][i].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");

    // With generation, streamed and not: prompt then completion, same text and tokens.
    let body = |stream: bool| {
        json!({"prompt": prompt, "echo": true, "logprobs": 1, "max_tokens": 4,
            "temperature": 0, "stream": stream})
    };
    let (_, whole) = status_and_json(post(&url, body(false)).await).await;
    let c = &whole["choices"][0];
    let text = c["text"].as_str().expect("text");
    assert!(
        text.starts_with(prompt) && text.len() > prompt.len(),
        "{text:?}"
    );
    let tokens = c["logprobs"]["tokens"].as_array().expect("tokens").clone();
    assert_eq!(tokens.len(), n + 4);
    assert_eq!(c["logprobs"]["text_offset"][n], prompt.len());
    let plain: Value = post(
        &url,
        json!({"prompt": prompt, "max_tokens": 4, "temperature": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(&text[prompt.len()..], plain["choices"][0]["text"]);
    let r = post(&url, body(true)).await;
    let data = sse_data(&r.text().await.expect("body"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json chunk"))
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["text"], prompt,
        "the prompt comes first"
    );
    let (mut s_text, mut s_tokens) = (String::new(), Vec::new());
    for ch in &chunks {
        s_text.push_str(ch["choices"][0]["text"].as_str().unwrap_or(""));
        if let Some(t) = ch["choices"][0]["logprobs"]["tokens"].as_array() {
            s_tokens.extend(t.iter().cloned());
        }
    }
    assert_eq!(s_text, text);
    assert_eq!(s_tokens, tokens);
}

/// Sends `body` to `path` on a raw socket and returns it unread: the test closes it by hand.
async fn raw_request(addr: &str, path: &str, body: Value) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    sock
}

async fn wait_for(
    engine: &wick::engine::EngineHandle,
    what: &str,
    ok: impl Fn(&wick::engine::EngineStats) -> bool,
) {
    let t = Instant::now();
    while !ok(&engine.stats()) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "waited too long for {what}: {:?}",
            engine.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_whose_clients_leave_are_cancelled_before_any_write() {
    // One running sequence at a time; A holds it for 400 steps of at least 25 ms (>= 10 s).
    // Queued requests get no bytes at all until A is done, so only a server that watches the
    // connection (not its writes) can cancel them while A still runs.
    let inner = wick::model::testing::random_llama(
        &wick::model::testing::tiny_config(),
        7,
        None,
        &Device::Cpu,
    );
    let model = Slow {
        inner,
        delay: Duration::from_millis(25),
    };
    let config = wick::engine::EngineConfig {
        max_running: 1,
        ..tiny_config()
    };
    let engine = wick::engine::Engine::start(model, config).expect("engine starts");
    let state = AppState::new("tiny", 1 << 20);
    state.set_ready(crate::common::served(engine.clone()));
    let server = TestServer::start(state).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let a = post(
        &format!("{}/v1/completions", server.url),
        json!({"prompt": [1, 2, 3], "max_tokens": 400, "stream": true}),
    )
    .await;
    assert_eq!(a.status().as_u16(), 200);
    wait_for(&engine, "A to run", |s| s.running == 1).await;
    let streamed = raw_request(
        &addr,
        "/v1/completions",
        json!({"prompt": [4, 5, 6], "max_tokens": 5, "stream": true}),
    )
    .await;
    let plain = raw_request(
        &addr,
        "/v1/completions",
        json!({"prompt": [7, 8], "max_tokens": 5}),
    )
    .await;
    wait_for(&engine, "both to queue", |s| s.waiting == 2).await;
    drop((streamed, plain));
    wait_for(&engine, "the cancellations", |s| {
        s.cancellations == 2 && s.waiting == 0
    })
    .await;
    let st = engine.stats();
    assert_eq!(
        st.running, 1,
        "A still runs: the queued ones left first: {st:?}"
    );
    assert_eq!(st.queue_depth, 0, "{st:?}");
    // A's client leaves too; the slot is free and the next request is served.
    drop(a);
    wait_for(&engine, "A's cancellation", |s| {
        s.running == 0 && s.cancellations == 3
    })
    .await;
    let r = post(
        &format!("{}/v1/completions", server.url),
        json!({"prompt": [1, 2], "max_tokens": 2}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for(&engine, "every block free", |s| s.kv_blocks_used == 0).await;
    server.stop().await;
}
