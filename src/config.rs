//! Command-line groups shared by the commands, and their validation: `ModelArgs` (which model,
//! which device), `ServeModelArgs` (`wick serve`'s several models), `EngineArgs` -> `EngineConfig`, `ServerArgs` (the HTTP listener),
//! `SamplingArgs` -> `SamplingParams` and `KvDtypeArg`; `ServerArgs::auth` -> the API keys,
//! `ServerArgs::data_dir` -> where `wick.db` lives. Every flag has a doc line that
//! `--help` shows; the engine and server flags also have a `WICK_` environment variable.
//! Parsed on the main thread before any command runs; nothing here loads or runs anything.

use candle_core::DType;
use clap::Args;

use crate::api::auth::{ApiKeys, AuthConfig};

mod serve_models;
use crate::engine::EngineConfig;
use crate::sampling::SamplingParams;
pub use serve_models::{ServeModelArgs, ServedModels};

/// The embedded default model: the small test model `scripts/fetch-test-model.sh` fetches.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Which model, on which device.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A .gguf file, a Hugging Face model directory, or a hub id `org/name[:file]`.
    #[arg(long, short, env = "WICK_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, env = "WICK_DEVICE", default_value = "cpu")]
    pub device: String,
}

/// The HTTP listener of `wick serve`. Its `Debug` form redacts the keys.
#[derive(Clone, Args)]
pub struct ServerArgs {
    /// Address to bind.
    #[arg(long, env = "WICK_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind.
    #[arg(long, env = "WICK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// The name requests use for the first --model when it is a bare path or id (default: the
    /// --model value).
    #[arg(long, env = "WICK_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Largest request body in bytes (413 past it).
    #[arg(long, env = "WICK_MAX_BODY_BYTES", default_value_t = crate::api::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish on SIGTERM or ctrl-c.
    #[arg(long, env = "WICK_DRAIN_GRACE_SECS", default_value_t = 30)]
    pub drain_grace_secs: u64,
    /// Most tokens one choice may generate: a larger `max_tokens` is a 400, an absent one
    /// defaults to the context left, capped at this.
    #[arg(long, env = "WICK_MAX_TOKENS_CAP")]
    pub max_tokens_cap: Option<usize>,
    /// Seconds a request may take, queue and generation included; past it the request ends
    /// with a 504 (streamed: an error event) and its KV blocks are freed. 0 is no limit.
    #[arg(long, env = "WICK_REQUEST_TIMEOUT", default_value_t = 0)]
    pub request_timeout: u64,
    /// Origins browsers may call the API from (CORS), `*` for any; repeat the flag or separate
    /// with commas. None: no CORS headers (same-origin only).
    #[arg(long, env = "WICK_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,
    /// An API key clients must send (`Authorization: Bearer KEY` or `x-api-key: KEY`);
    /// repeatable, or comma-separated in the variable. No key: the server is open.
    #[arg(
        long = "api-key",
        env = "WICK_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// A TOML file of keys: `[[keys]]` tables with `name`, `key` or `sha256` (hex of the key's
    /// SHA-256), `admin = true`, and the key's limits `requests_per_minute`,
    /// `tokens_per_minute`, `max_concurrent_requests`.
    #[arg(long, env = "WICK_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,
    /// `/metrics` needs a key too (it is public otherwise, as `/health*` always is).
    #[arg(long, env = "WICK_METRICS_REQUIRE_KEY")]
    pub metrics_require_key: bool,
    /// Most open client connections; past it new ones wait in the listen backlog until one
    /// closes.
    #[arg(long, env = "WICK_MAX_CONNECTIONS", default_value_t = crate::api::ConnLimits::default().max_connections)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle kept-alive connection to
    /// start its next request) before the connection is closed.
    #[arg(long, env = "WICK_HEADER_READ_TIMEOUT", default_value_t = crate::api::ConnLimits::default().header_read_timeout.as_secs())]
    pub header_read_timeout: u64,
    /// Largest request head (request line and headers) in bytes; past it: 431.
    #[arg(long, env = "WICK_MAX_HEADER_BYTES", default_value_t = crate::api::ConnLimits::default().max_header_bytes)]
    pub max_header_bytes: usize,
    /// Export a span per request, with queue, prefill and decode children, by OTLP over
    /// HTTP/protobuf to this collector URL (`http://host:4318` gets `/v1/traces`). Off unless
    /// this or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// is set; the service name is `OTEL_SERVICE_NAME` (default `wick`).
    #[arg(long, env = "WICK_OTLP_TRACES_ENDPOINT", value_name = "URL")]
    pub otlp_traces_endpoint: Option<String>,
    /// Where the server keeps its database (`wick.db`: usage statistics). Default: the
    /// platform's data directory + `wick` (`~/.local/share/wick` on Linux).
    #[arg(long, env = "WICK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// How long stored responses (by creation) and conversations (by last change) are kept
    /// in `wick.db` before the background pruner deletes them: `30d`, `12h`, `90m`, `3600s`
    /// (a bare number is seconds); `0` or `off` keeps them forever.
    #[arg(long, env = "WICK_RESPONSE_RETENTION", value_name = "AGE", default_value = "30d", value_parser = parse_retention)]
    pub response_retention: Retention,
    /// Do not serve the web page (chat and dashboard) at `/` and `/ui`.
    #[arg(long, env = "WICK_NO_UI")]
    pub no_ui: bool,
}

/// `--response-retention`: how long stored responses and conversations are kept; `None` is
/// forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<std::time::Duration>);

/// `30d`, `12h`, `90m`, `3600s` or a bare number of seconds; `0` or `off`: forever.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(Retention(None));
    }
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?}: expected a number and a unit s, m, h or d (`30d`), or `off`"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (`30d`), or `off`"))?;
    let secs = n
        .checked_mul(per)
        .ok_or_else(|| format!("{s:?}: too long"))?;
    Ok(Retention(
        (secs > 0).then(|| std::time::Duration::from_secs(secs)),
    ))
}

impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArgs")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("served_model_name", &self.served_model_name)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("drain_grace_secs", &self.drain_grace_secs)
            .field("max_tokens_cap", &self.max_tokens_cap)
            .field("request_timeout", &self.request_timeout)
            .field("cors_allow_origin", &self.cors_allow_origin)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("api_keys_file", &self.api_keys_file)
            .field("metrics_require_key", &self.metrics_require_key)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("otlp_traces_endpoint", &self.otlp_traces_endpoint)
            .field("data_dir", &self.data_dir)
            .field("response_retention", &self.response_retention)
            .field("no_ui", &self.no_ui)
            .finish()
    }
}

impl ServerArgs {
    /// The API keys from `--api-key` and `--api-keys-file` together; one-line errors.
    pub fn auth(&self) -> Result<AuthConfig, String> {
        let mut keys = ApiKeys::from_plain(&self.api_keys)?;
        if let Some(path) = &self.api_keys_file {
            keys.extend(ApiKeys::from_file(path)?)
                .map_err(|e| format!("api keys file {}: {e}", path.display()))?;
        }
        Ok(AuthConfig {
            keys,
            metrics_require_key: self.metrics_require_key,
        })
    }
}

/// How `wick run` picks each token (checked by [`SamplingParams::validate`] once the vocabulary
/// is known).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// 0 is off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass; 1 is off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one; 0 is off.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty on tokens already seen in the prompt or the output (CTRL-style); 1 is off.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Subtracted from the logit of each token already generated; 0 is off.
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtracted from each token's logit once per time it was generated; 0 is off.
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl From<&SamplingArgs> for SamplingParams {
    fn from(a: &SamplingArgs) -> Self {
        SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repetition_penalty,
            presence_penalty: a.presence_penalty,
            frequency_penalty: a.frequency_penalty,
            logit_bias: Vec::new(),
            seed: a.seed,
            logprobs: None,
        }
    }
}

/// The KV cache element type: one flag for the engine ([`EngineArgs`]) and `wick speed`.
#[derive(Debug, Clone, Copy, Args)]
pub struct KvDtypeArg {
    /// KV cache element type: f16, bf16 or f32.
    #[arg(long, env = "WICK_KV_CACHE_DTYPE", default_value = "f16", value_parser = parse_dtype)]
    pub kv_cache_dtype: DType,
}

/// Engine sizing and limits.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Tokens one forward step may process (decode tokens + prefill chunks).
    #[arg(long, env = "WICK_MAX_BATCH_TOKENS", default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Sequences that may run at once.
    #[arg(long, env = "WICK_MAX_RUNNING", default_value_t = 64)]
    pub max_running: usize,
    /// Requests that may wait for admission before new ones are refused (429).
    #[arg(long, env = "WICK_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,
    /// Prompt tokens that may wait for admission, all queued requests together.
    #[arg(long, env = "WICK_MAX_QUEUE_TOKENS", default_value_t = 262_144)]
    pub max_queue_tokens: usize,
    /// KV cache size, e.g. `2GiB` or `512MiB`. Default: room for 65,536 tokens (or one full
    /// context if longer), capped at a quarter of the available memory and at 4 GiB; CPU pages
    /// become resident only as blocks are used.
    #[arg(long, env = "WICK_KV_CACHE_MEMORY", value_parser = parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    #[command(flatten)]
    pub kv: KvDtypeArg,
    /// Tokens per KV block.
    #[arg(long, env = "WICK_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Turn off reuse of cached prompt prefixes.
    #[arg(long, env = "WICK_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// KV memory that cached prompt prefixes no request uses may keep, e.g. `256MiB`; past
    /// it the oldest are dropped and their pages given back. Default: an eighth of the KV
    /// cache, at most 512 MiB.
    #[arg(long, alias = "prefix-cache-bytes", env = "WICK_PREFIX_CACHE_MEMORY", value_parser = parse_bytes)]
    pub prefix_cache_memory: Option<u64>,
}

impl EngineArgs {
    /// Checks the values and builds the engine's config.
    pub fn resolve(&self) -> Result<EngineConfig, String> {
        let positive = [
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-running", self.max_running),
            ("--max-queue", self.max_queue),
            ("--block-size", self.block_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1, got 0"));
        }
        if self.max_running > self.max_batch_tokens {
            return Err(format!(
                "--max-running {} > --max-batch-tokens {}: some running sequences could never decode",
                self.max_running, self.max_batch_tokens
            ));
        }
        Ok(EngineConfig {
            max_batch_tokens: self.max_batch_tokens,
            max_running: self.max_running,
            max_queue: self.max_queue,
            max_queue_tokens: self.max_queue_tokens,
            block_size: self.block_size,
            kv_cache_bytes: self.kv_cache_memory,
            kv_dtype: self.kv.kv_cache_dtype,
            prefix_caching: !self.no_prefix_caching,
            prefix_cache_bytes: self.prefix_cache_memory,
        })
    }
}

/// Parses `2GiB`, `512MiB`, `1.5GB`, `1000000` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: expected e.g. 2GiB, 512MiB or a byte count"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("invalid size unit `{other}` in `{s}`")),
    };
    Ok((value * mult) as u64)
}

/// Parses a KV cache element type: `f16`, `bf16` or `f32`.
pub(crate) fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        "f32" => Ok(DType::F32),
        other => Err(format!(
            "unknown KV cache dtype `{other}`: expected f16, bf16 or f32"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_units_and_off() {
        let d = |secs| Ok(Retention(Some(std::time::Duration::from_secs(secs))));
        assert_eq!(parse_retention("30d"), d(30 * 86_400));
        assert_eq!(parse_retention("12h"), d(12 * 3_600));
        assert_eq!(parse_retention("90m"), d(5_400));
        assert_eq!(parse_retention("45"), d(45));
        assert_eq!(parse_retention("0"), Ok(Retention(None)));
        assert_eq!(parse_retention("OFF"), Ok(Retention(None)));
        for bad in ["30 days", "d", "-1d", "1w", "99999999999999999999d"] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("2XB").unwrap_err().contains("XB"));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn engine_args_are_checked() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            e: EngineArgs,
        }
        let t = T::parse_from(["t", "--kv-cache-memory", "1GiB", "--kv-cache-dtype", "bf16"]);
        let c = t.e.resolve().unwrap();
        assert_eq!(c.kv_cache_bytes, Some(1 << 30));
        assert_eq!(c.kv_dtype, DType::BF16);
        assert_eq!(c.prefix_cache_bytes, None);
        let t = T::parse_from(["t", "--prefix-cache-memory", "64MiB"]);
        assert_eq!(t.e.resolve().unwrap().prefix_cache_bytes, Some(64 << 20));
        let t = T::parse_from(["t", "--prefix-cache-bytes", "0"]);
        assert_eq!(t.e.resolve().unwrap().prefix_cache_bytes, Some(0));
        let t = T::parse_from(["t", "--max-running", "600"]);
        assert!(t.e.resolve().unwrap_err().contains("--max-running 600"));
        let t = T::parse_from(["t", "--block-size", "0"]);
        assert!(t.e.resolve().unwrap_err().contains("--block-size"));
    }

    #[test]
    fn sampling_args_become_sampling_params() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            s: SamplingArgs,
        }
        let defaults = SamplingParams::from(&T::parse_from(["t"]).s);
        assert_eq!(defaults.temperature, 0.7);
        assert_eq!(
            (defaults.top_k, defaults.top_p, defaults.min_p),
            (0, 1.0, 0.0)
        );
        assert_eq!(defaults.repetition_penalty, 1.0);
        assert_eq!(
            (defaults.presence_penalty, defaults.frequency_penalty),
            (0.0, 0.0)
        );
        assert_eq!(defaults.seed, None);
        let t = T::parse_from([
            "t",
            "--temperature=0",
            "--top-k=5",
            "--top-p=0.9",
            "--min-p=0.05",
            "--repetition-penalty=1.1",
            "--presence-penalty=0.5",
            "--frequency-penalty=-0.5",
            "--seed=7",
        ]);
        let p = SamplingParams::from(&t.s);
        assert_eq!(
            (p.temperature, p.top_k, p.top_p, p.min_p),
            (0.0, 5, 0.9, 0.05)
        );
        assert_eq!(p.repetition_penalty, 1.1);
        assert_eq!((p.presence_penalty, p.frequency_penalty), (0.5, -0.5));
        assert_eq!(p.seed, Some(7));
        assert!(p.logit_bias.is_empty() && p.logprobs.is_none());
        assert_eq!(p.validate(100), Ok(()));
    }

    #[test]
    fn server_args_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            s: ServerArgs,
        }
        let s = T::parse_from(["t"]).s;
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 8080));
        assert_eq!(s.served_model_name, None);
        assert_eq!(s.max_body_bytes, crate::api::DEFAULT_MAX_BODY_BYTES);
        assert_eq!(s.drain_grace_secs, 30);
        assert!(s.api_keys.is_empty() && s.api_keys_file.is_none() && !s.metrics_require_key);
        assert!(s.auth().unwrap().is_open());
        assert_eq!(s.otlp_traces_endpoint, None);
        let s = T::parse_from(["t", "--otlp-traces-endpoint", "http://c:4318"]).s;
        assert_eq!(s.otlp_traces_endpoint.as_deref(), Some("http://c:4318"));
        assert!(format!("{s:?}").contains("http://c:4318"));
        assert_eq!(s.data_dir, None);
        let s = T::parse_from(["t", "--data-dir", "/srv/wick"]).s;
        assert_eq!(
            s.data_dir.as_deref(),
            Some(std::path::Path::new("/srv/wick"))
        );
        assert!(format!("{s:?}").contains("/srv/wick"));
        assert_eq!(
            s.response_retention,
            Retention(Some(std::time::Duration::from_secs(30 * 86_400)))
        );
        let s = T::parse_from(["t", "--response-retention", "off"]).s;
        assert_eq!(s.response_retention, Retention(None));
        assert!(T::try_parse_from(["t", "--response-retention", "soon"]).is_err());
    }

    #[test]
    fn api_keys_come_from_flags_and_a_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            s: ServerArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        std::fs::write(
            &file,
            "[[keys]]\nname = \"ops\"\nkey = \"sk-c\"\nadmin = true\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let t = T::parse_from([
            "t",
            "--api-key",
            "sk-a",
            "--api-key=sk-b",
            "--api-keys-file",
            f,
        ]);
        let auth = t.s.auth().unwrap();
        assert_eq!(auth.keys.len(), 3);
        assert!(auth.keys.check("sk-b").is_some());
        assert!(auth.keys.check("sk-c").unwrap().admin);
        assert!(!auth.metrics_require_key);
        let t = T::parse_from(["t", "--api-key", "sk-c", "--api-keys-file", f]);
        let e = t.s.auth().unwrap_err();
        assert!(e.contains("keys.toml") && e.contains("twice"), "{e}");
        assert!(
            !format!("{:?}", t.s).contains("sk-c"),
            "Debug redacts the keys"
        );
        let t = T::parse_from(["t", "--api-key", "", "--metrics-require-key"]);
        assert!(t.s.metrics_require_key);
        assert!(t.s.auth().unwrap_err().contains("empty"));
    }
}
