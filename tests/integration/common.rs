//! Shared helpers: where the test model and the reference data are.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use wick::model::LoadedModel;

/// The test model: `$WICK_TEST_MODEL`, else `models/SmolLM2-135M-Instruct.Q4_1.gguf`.
/// `None` (with a notice) when it is missing outside CI; under CI a missing model fails.
pub fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("WICK_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "test model missing at {} (run scripts/fetch-test-model.sh)",
            p.display()
        );
    }
    eprintln!(
        "skipping: test model missing at {} (run scripts/fetch-test-model.sh)",
        p.display()
    );
    None
}

/// `$WICK_REFERENCE_DIR`, else `../shared/reference` beside the checkout.
pub fn reference_dir() -> PathBuf {
    std::env::var_os("WICK_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"))
}

pub fn reference(name: &str) -> serde_json::Value {
    let p = reference_dir().join(name);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reference file {}: {e}", p.display()));
    serde_json::from_str(&text).expect("reference JSON parses")
}

/// The test model, loaded once per test binary.
pub fn model() -> Option<&'static LoadedModel> {
    static MODEL: OnceLock<Option<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            model_path().map(|p| {
                wick::model::load(p.to_str().expect("utf-8 path"), &Device::Cpu)
                    .expect("test model loads")
            })
        })
        .as_ref()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// A server in process on 127.0.0.1:0; dropping it (or `stop`) shuts the server down.
pub struct TestServer {
    pub url: String,
    pub state: wick::api::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Serves `state`'s router; call inside a tokio runtime.
    pub async fn start(state: wick::api::AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The server's own accept loop, with its connection limits.
        let serving = wick::api::serve(listener, state.clone(), async {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            let _ = serving.await;
        });
        Self {
            url,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}

/// An engine over the tiny random model (vocab 96, context 512), served with the byte-level
/// test tokenizer and a ChatML template.
pub fn tiny_served(config: wick::engine::EngineConfig) -> wick::api::Served {
    let model = wick::model::testing::random_llama(
        &wick::model::testing::tiny_config(),
        7,
        None,
        &Device::Cpu,
    );
    let engine = wick::engine::Engine::start(model, config).expect("engine starts");
    served(engine)
}

/// The tiny random model at >= `delay` a step, served like [`tiny_served`].
pub fn slow_served(delay: std::time::Duration) -> wick::api::Served {
    let model = Slow {
        inner: wick::model::testing::random_llama(
            &wick::model::testing::tiny_config(),
            7,
            None,
            &Device::Cpu,
        ),
        delay,
    };
    let engine = wick::engine::Engine::start(model, tiny_config()).expect("engine starts");
    served(engine)
}

/// `engine` served with the byte-level test tokenizer (vocab 96) and a ChatML template.
pub fn served(engine: wick::engine::EngineHandle) -> wick::api::Served {
    use wick::tokenizer::testing::{byte_level, chatml_template};
    let tok = std::sync::Arc::new(byte_level(96));
    wick::api::Served::new(engine, tok, Some(std::sync::Arc::new(chatml_template())))
}

/// The tiny engine config tests use: a 4 MiB KV cache.
pub fn tiny_config() -> wick::engine::EngineConfig {
    wick::engine::EngineConfig {
        kv_cache_bytes: Some(4 << 20),
        kv_dtype: candle_core::DType::F32,
        ..wick::engine::EngineConfig::default()
    }
}

/// The real model behind a server on its own thread and runtime, started once per binary.
pub fn real_server_url() -> Option<String> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        let path = model_path()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let loaded = wick::model::load(path.to_str().expect("utf-8"), &Device::Cpu)
                    .expect("test model loads");
                let tok = std::sync::Arc::new(loaded.tokenizer);
                let config = wick::engine::EngineConfig {
                    kv_cache_bytes: Some(64 << 20),
                    ..wick::engine::EngineConfig::default()
                };
                let engine =
                    wick::engine::Engine::start(loaded.model, config).expect("engine starts");
                // Responses are stored, in a directory that lives as long as the binary.
                let dir = tempfile::tempdir().expect("temp dir");
                let store = wick::store::ResponseStore::open(&dir.path().join("wick.db"))
                    .expect("response store opens");
                let options = wick::api::HttpOptions {
                    responses: Some(store),
                    ..wick::api::HttpOptions::default()
                };
                let state = wick::api::AppState::with_options("smol", options);
                let template = loaded.chat_template.map(std::sync::Arc::new);
                state.set_ready(wick::api::Served::new(engine, tok, template));
                let server = TestServer::start(state).await;
                tx.send(server.url.clone()).expect("send url");
                // Serve for the rest of the test binary.
                std::future::pending::<()>().await;
                drop((server, dir));
            });
        });
        Some(rx.recv().expect("server url"))
    })
    .clone()
}

/// The `data:` payloads of an SSE body, in order.
/// POSTs `body` as JSON to `url`.
pub async fn post(url: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request")
}

pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

/// The tiny model, slowed down: every forward step takes at least `delay`.
pub struct Slow {
    pub inner: wick::model::Llama,
    pub delay: std::time::Duration,
}

impl wick::model::CausalLm for Slow {
    fn forward(
        &self,
        batch: &wick::model::Batch<'_>,
        cache: &mut wick::model::KvCache,
    ) -> Result<candle_core::Tensor, wick::model::ModelError> {
        std::thread::sleep(self.delay);
        self.inner.forward(batch, cache)
    }
    fn forward_hidden(
        &self,
        batch: &wick::model::Batch<'_>,
        cache: &mut wick::model::KvCache,
    ) -> Result<candle_core::Tensor, wick::model::ModelError> {
        std::thread::sleep(self.delay);
        self.inner.forward_hidden(batch, cache)
    }
    fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }
    fn kv_shape(&self) -> wick::model::KvShape {
        self.inner.kv_shape()
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_context(&self) -> usize {
        self.inner.max_context()
    }
    fn device(&self) -> &candle_core::Device {
        self.inner.device()
    }
}

/// Opens a raw socket to `url`, starts a long streamed completion (16 choices x 490 tokens,
/// every token a chunk), reads until three `data:` events came, and returns the socket (for the
/// test to close by hand: the client really goes away) with what it read.
pub async fn long_stream_socket(url: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = serde_json::json!({"prompt": [1, 2, 3], "max_tokens": 490, "n": 16,
        "stream": true,
        // With logprobs every token is a chunk, even one the byte-level tokenizer holds back.
        "logprobs": 1})
    .to_string();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while seen.windows(5).filter(|w| w == b"data:").count() < 3 {
        let got = sock.read(&mut buf).await.expect("read");
        assert!(got > 0, "the server closed early");
        seen.extend_from_slice(&buf[..got]);
    }
    (sock, seen)
}
