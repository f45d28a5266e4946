//! Logging and trace export set-up. [`init`]: a `tracing` subscriber writing to stderr (text or
//! JSON), filtered by `RUST_LOG` (default `wick=info`), installed by the binary's main thread.
//! [`traces`]: the OpenTelemetry tracer provider of `wick serve` (OTLP over HTTP/protobuf),
//! built on the main thread before the tokio runtime exists and shut down after it ends; its
//! batch processor exports on a thread of its own, so requests only ever hand spans to a
//! bounded queue (full: spans dropped) and never wait on the collector. The request spans are
//! made in `api::trace`; metrics live with the server (`api::metrics`).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("wick=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The standard variables that turn trace export on when no flag does.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Spans waiting for export past which new ones are dropped.
pub const MAX_QUEUED_SPANS: usize = 4096;

/// How long the exit waits for the last spans to go out.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracer provider for `--otlp-traces-endpoint` (`endpoint`), else for the standard
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variables; `None`
/// (tracing off) when none is set or `OTEL_SDK_DISABLED=true`. An endpoint with no path gets
/// `/v1/traces`. The service is `OTEL_SERVICE_NAME`, default `wick`; the batch processor
/// honours the `OTEL_BSP_*` variables, the sampler `OTEL_TRACES_SAMPLER`. Call it outside any
/// tokio runtime (the blocking HTTP client must not be built inside one).
pub fn traces(endpoint: Option<&str>) -> Result<Option<SdkTracerProvider>, String> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true");
    let from_env = ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    let endpoint = endpoint.map(str::trim).filter(|e| !e.is_empty());
    if disabled || (endpoint.is_none() && !from_env) {
        return Ok(None);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(e) = endpoint {
        builder = builder.with_endpoint(traces_url(e)?);
    }
    let exporter = builder
        .build()
        .map_err(|e| format!("--otlp-traces-endpoint: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "wick".into());
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .build();
    let processor = BatchSpanProcessor::builder(Logged::new(exporter))
        .with_batch_config(config)
        .build();
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build(),
    ))
}

/// `url` with `/v1/traces` when it has no path of its own (`http://host:4318`), as is.
fn traces_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .filter(|r| !r.is_empty() && !r.starts_with('/'))
        .ok_or_else(|| {
            format!("--otlp-traces-endpoint: {url:?} is not an http:// or https:// URL")
        })?;
    Ok(match rest.find('/') {
        None => format!("{url}/v1/traces"),
        Some(i) if &rest[i..] == "/" => format!("{}v1/traces", url),
        Some(_) => url.to_string(),
    })
}

/// Sends the last spans and stops the export thread (waits at most [`SHUTDOWN_TIMEOUT`]).
pub fn shutdown_traces(provider: &SdkTracerProvider) {
    if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
        tracing::warn!(error = %e, "flushing the last spans");
    }
}

/// The OTLP exporter, with a warning when exports start failing and a note when they recover
/// (the SDK's own logs are off), so an unreachable collector is seen once, not per batch.
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> Logged<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        let was_failing = self.failing.swap(result.is_err(), Ordering::Relaxed);
        match (&result, was_failing) {
            (Err(e), false) => {
                tracing::warn!(error = %e, spans = n, "exporting spans failed (dropped)")
            }
            (Ok(()), true) => tracing::info!("exporting spans works again"),
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_endpoint_gets_the_traces_path() {
        let ok = |u: &str| traces_url(u).expect("valid");
        assert_eq!(ok("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(ok("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(ok("https://c/v1/traces"), "https://c/v1/traces");
        assert_eq!(
            ok("http://c:4318/otlp/v1/traces"),
            "http://c:4318/otlp/v1/traces"
        );
        for bad in ["c:4318", "grpc://c:4317", "http://", "http:///v1/traces"] {
            let e = traces_url(bad).expect_err(bad);
            assert!(e.contains("--otlp-traces-endpoint"), "{e}");
        }
    }
}
