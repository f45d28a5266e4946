//! Command-line groups shared by the commands that run the engine, and their validation into
//! [`EngineConfig`]. Every flag has a `WICK_` environment variable.

use candle_core::DType;
use clap::Args;

use crate::engine::EngineConfig;

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
    /// KV cache element type: f16, bf16 or f32.
    #[arg(long, env = "WICK_KV_CACHE_DTYPE", default_value = "f16", value_parser = parse_dtype)]
    pub kv_cache_dtype: DType,
    /// Tokens per KV block.
    #[arg(long, env = "WICK_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Turn off reuse of cached prompt prefixes.
    #[arg(long, env = "WICK_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
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
            kv_dtype: self.kv_cache_dtype,
            prefix_caching: !self.no_prefix_caching,
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
        let t = T::parse_from(["t", "--max-running", "600"]);
        assert!(t.e.resolve().unwrap_err().contains("--max-running 600"));
        let t = T::parse_from(["t", "--block-size", "0"]);
        assert!(t.e.resolve().unwrap_err().contains("--block-size"));
    }
}
