//! `wick serve`: binds, answers `/health` 503 while the default model loads (through the
//! model registry, on a blocking thread; the other `--model`s load on first use), then
//! serves; on SIGTERM or ctrl-c it drains: stops admitting (503), lets in-flight requests
//! finish within the grace period through `EngineHandle::shutdown`, writes the queued usage
//! rows ([`UsageWriter::finish`]), then exits.
//!
//! The main thread builds a multi-threaded tokio runtime and blocks on it; the HTTP server
//! ([`api::serve`]) is one task of it, model loading and the grammar compiler run on
//! `spawn_blocking`, the model itself on the engine's worker thread, and the usage database
//! writes on the `wick-usage` thread.

mod loader;

pub use loader::{source_bytes, FileLoader};

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::task::JoinError;

use crate::api::auth::AuthConfig;
use crate::api::registry::Registry;
use crate::api::{self, AppState, HttpOptions};
use crate::config::{EngineArgs, ServeModelArgs, ServerArgs};
use crate::model::device;
use crate::store::{self, Pruner, ResponseStore, UsageLog, UsageWriter, WriterConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ServeModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Why `wick serve` could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine flags are out of range or contradict each other, or the API keys are bad.
    #[error("{0}")]
    Config(String),
    #[error("starting the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    /// The default model could not be loaded (the message names the model and why).
    #[error("{0}")]
    Load(String),
    /// The server task panicked or was cancelled.
    #[error("the server task: {0}")]
    ServerTask(#[source] JoinError),
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    #[error("starting the usage writer thread: {0}")]
    UsageThread(#[source] std::io::Error),
}

/// The HTTP options of `args`, checked.
fn http_options(args: &crate::config::ServerArgs) -> Result<HttpOptions, ServeError> {
    if args.max_connections == 0 || args.header_read_timeout == 0 || args.max_header_bytes < 1024 {
        return Err(ServeError::Config(
            "--max-connections and --header-read-timeout must be > 0, --max-header-bytes >= 1024"
                .into(),
        ));
    }
    for o in args.cors_allow_origin.iter().filter(|o| *o != "*") {
        // An origin is scheme://host[:port]: no path, no spaces.
        let host = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        let ok = host
            .is_some_and(|h| !h.is_empty() && !h.contains(['/', ' ', '\t']) && h.is_ascii())
            && axum::http::HeaderValue::from_str(o).is_ok();
        if !ok {
            return Err(ServeError::Config(format!(
                "--cors-allow-origin: {o:?} is not an origin (scheme://host[:port]) or *"
            )));
        }
    }
    Ok(HttpOptions {
        max_body_bytes: args.max_body_bytes,
        request_timeout: (args.request_timeout > 0)
            .then(|| Duration::from_secs(args.request_timeout)),
        cors_allow_origins: args.cors_allow_origin.clone(),
        auth: std::sync::Arc::default(),
        connections: api::ConnLimits {
            max_connections: args.max_connections,
            header_read_timeout: Duration::from_secs(args.header_read_timeout),
            max_header_bytes: args.max_header_bytes,
        },
        tracer: None,
        usage: None,
        responses: None,
        ui: !args.no_ui,
    })
}

/// Runs the server until a shutdown signal. The tracer provider (when tracing is configured)
/// is built before the runtime and shut down after it, once the drained connections have
/// ended their spans.
pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let provider = crate::telemetry::traces(args.server.otlp_traces_endpoint.as_deref())
        .map_err(ServeError::Config)?;
    let tracer = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        p.tracer("wick")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = rt.block_on(serve(args, tracer));
    drop(rt);
    if let Some(p) = provider {
        crate::telemetry::shutdown_traces(&p);
    }
    result
}

async fn serve(
    args: &ServeArgs,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Result<(), ServeError> {
    let config = args.engine.resolve().map_err(ServeError::Config)?;
    let auth = args.server.auth().map_err(ServeError::Config)?;
    let db = data_db(args.server.data_dir.as_deref())?;
    // The response store opens (and migrates) the database before the usage writer's thread
    // does: two connections migrating a new file at once would find it locked.
    let (responses, _pruner) = start_responses(&db, args.server.response_retention)?;
    let (usage, writer) = start_usage(db)?;
    let registry = registry(args, config)?;
    let addr = format!("{}:{}", args.server.host, args.server.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, models = %registry.names().join(", "), "listening; loading the default model");
    log_auth(&auth, &listener);
    if tracer.is_some() {
        tracing::info!("exporting request traces (OTLP over HTTP)");
    }
    let options = HttpOptions {
        auth: std::sync::Arc::new(auth),
        tracer,
        usage: Some(usage),
        responses: Some(responses),
        ..http_options(&args.server)?
    };
    let state = AppState::with_registry(registry.clone(), options);
    let grace = Duration::from_secs(args.server.drain_grace_secs);
    let server = tokio::spawn(api::serve(
        listener,
        state.clone(),
        drain(state.clone(), grace),
    ));
    registry.load_default().await.map_err(ServeError::Load)?;
    tracing::info!(model = %registry.default_name(), "ready");
    let served = server.await;
    // Every connection is closed: every usage row is queued. Write them before exiting.
    let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
    served
        .map_err(ServeError::ServerTask)?
        .map_err(ServeError::Serve)
}

/// The served models of `args`, each loading with its own engine of `config`'s sizes.
fn registry(args: &ServeArgs, config: crate::engine::EngineConfig) -> Result<Registry, ServeError> {
    let served = args
        .model
        .resolve(args.server.served_model_name.as_deref())
        .map_err(ServeError::Config)?;
    let limits = args.model.limits().map_err(ServeError::Config)?;
    let loader = FileLoader {
        device: device::parse(&args.model.device)?,
        engine: config,
        max_tokens_cap: args.server.max_tokens_cap,
    };
    Registry::new(served.models, served.default, Arc::new(loader), limits)
        .map_err(ServeError::Config)
}

/// `wick.db` in the data directory, created if need be: a directory that cannot be had stops
/// the start.
fn data_db(dir: Option<&std::path::Path>) -> Result<std::path::PathBuf, ServeError> {
    let dir = store::resolve_data_dir(dir).map_err(ServeError::Config)?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        ServeError::Config(format!("--data-dir {}: creating it: {e}", dir.display()))
    })?;
    Ok(dir.join(store::DB_FILE))
}

/// The usage log's writer thread on `db`: a database it cannot open is the writer's to log,
/// count and retry.
fn start_usage(db: std::path::PathBuf) -> Result<(UsageLog, UsageWriter), ServeError> {
    tracing::info!(db = %db.display(), "usage statistics");
    UsageWriter::start(db, WriterConfig::default()).map_err(ServeError::UsageThread)
}

/// The stored responses and conversations, in the usage log's `wick.db`, and their pruner
/// (none when `--response-retention off`). Unlike usage rows, a response that cannot be
/// stored would fail its request, so a database that cannot be opened stops the start.
fn start_responses(
    db: &std::path::Path,
    retention: crate::config::Retention,
) -> Result<(ResponseStore, Option<Pruner>), ServeError> {
    let store = ResponseStore::open(db)
        .map_err(|e| ServeError::Config(format!("stored responses: {e}")))?;
    let pruner = match retention.0 {
        Some(age) => {
            tracing::info!(
                ?age,
                "stored responses and conversations are pruned past this age"
            );
            let pruner = Pruner::start(store.clone(), age, store::prune::PRUNE_EVERY)
                .map_err(|e| ServeError::Config(format!("starting the pruner thread: {e}")))?;
            Some(pruner)
        }
        None => None,
    };
    Ok((store, pruner))
}

/// Names the keys (never the keys); warns once when an open server listens beyond loopback.
fn log_auth(auth: &AuthConfig, listener: &tokio::net::TcpListener) {
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    match (auth.is_open(), loopback) {
        (false, _) => tracing::info!(keys = %auth.keys.names().join(", "), "API keys required"),
        (true, false) => tracing::warn!(
            "no API key configured and listening beyond loopback: anyone who reaches the port \
             can use the server (see --api-key, --api-keys-file)"
        ),
        (true, true) => {}
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Waits for a signal, then drains: health 503, no new requests, in-flight ones finish.
async fn drain(state: AppState, grace: Duration) {
    shutdown_signal().await;
    tracing::info!(?grace, "draining");
    state.begin_drain();
    let registry = state.registry().clone();
    let _ = tokio::task::spawn_blocking(move || registry.shutdown(grace)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        server: crate::config::ServerArgs,
    }

    fn options(flags: &[&str]) -> Result<HttpOptions, ServeError> {
        let f = Flags::try_parse_from(std::iter::once("wick").chain(flags.iter().copied()))
            .expect("flags parse");
        http_options(&f.server)
    }

    #[test]
    fn http_flags_become_options_and_bad_origins_are_refused() {
        let o = options(&[
            "--request-timeout",
            "30",
            "--cors-allow-origin",
            "https://a.example,*",
        ])
        .expect("valid");
        assert_eq!(o.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.cors_allow_origins, ["https://a.example", "*"]);
        let o = options(&[]).expect("defaults");
        assert_eq!((o.request_timeout, o.cors_allow_origins.len()), (None, 0));
        for bad in [
            "a.example",
            "https://a b",
            "https://a.example/app",
            "https://",
        ] {
            let e = options(&["--cors-allow-origin", bad]).expect_err("refused");
            assert!(e.to_string().contains("--cors-allow-origin"), "{e}");
        }
    }
}
