//! `wick serve`: binds, answers `/health` 503 while the model loads (on a blocking thread),
//! then serves; on SIGTERM or ctrl-c it drains: stops admitting (503), lets in-flight requests
//! finish within the grace period through `EngineHandle::shutdown`, then exits.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState, Served};
use crate::cli::{CliError, ServeArgs};
use crate::engine::Engine;
use crate::model::{device, CausalLm};

/// Runs the server until a shutdown signal.
pub fn run(args: &ServeArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Config(format!("tokio runtime: {e}")))?;
    rt.block_on(serve(args))
}

async fn serve(args: &ServeArgs) -> Result<(), CliError> {
    let config = args.engine.resolve().map_err(CliError::Config)?;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.clone());
    let state = AppState::new(name, args.max_body_bytes);
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| CliError::Config(format!("binding {addr}: {e}")))?;
    tracing::info!(%addr, "listening; loading the model");
    let app = api::router(state.clone());
    let server = tokio::spawn({
        let state = state.clone();
        let grace = Duration::from_secs(args.drain_grace_secs);
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(drain(state, grace))
                .await
        }
    });
    let (spec, dev_name) = (args.model.model.clone(), args.model.device.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        let dev = device::parse(&dev_name)?;
        Ok::<_, CliError>(crate::model::load(&spec, &dev)?)
    })
    .await
    .map_err(|e| CliError::Config(format!("loading task: {e}")))??;
    let max_context = loaded.model.max_context();
    let tokenizer = Arc::new(loaded.tokenizer);
    let engine = Engine::start(loaded.model, Some(tokenizer.clone()), config)?;
    let template = loaded.chat_template.map(Arc::new);
    let served = tokio::task::spawn_blocking(move || {
        Served::new(engine, Some(tokenizer), template, max_context)
    })
    .await
    .map_err(|e| CliError::Config(format!("building the grammar compiler: {e}")))?;
    state.set_ready(served);
    tracing::info!(model = %loaded.name, "ready");
    server
        .await
        .map_err(|e| CliError::Config(format!("server task: {e}")))?
        .map_err(|e| CliError::Config(format!("server: {e}")))
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
    if let Some(engine) = state.engine().cloned() {
        let _ = tokio::task::spawn_blocking(move || engine.shutdown(grace)).await;
    }
}
