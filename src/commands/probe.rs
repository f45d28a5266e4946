//! `wick speed --membw`: what the machine can do, so a speed figure can be stated as a fraction
//! of it: the read bandwidth of the kernels' thread pool over a buffer several times the
//! last-level cache, and the int8 multiply-add peak of the instruction the matmul kernels use
//! (`vpdpbusd` with AVX-512 VNNI, else `vpmaddubsw`).
//!
//! Runs on the calling thread and the kernels' pool; allocates the buffer once per call.

use std::time::{Duration, Instant};

use crate::kernels::{Isa, ThreadPool};

/// What one probe measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeRow {
    /// `read_bandwidth` or `int8_macs`.
    pub test: &'static str,
    pub threads: usize,
    /// Bytes per second (read bandwidth) or multiply-adds per second (int8).
    pub per_second: f64,
    /// What was measured: the buffer, or the instruction.
    pub detail: String,
}

/// The last-level cache's size in bytes, from sysfs (Linux), if it says.
pub fn last_level_cache_bytes() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut best: Option<(u32, usize)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).ok();
        let (Some(level), Some(size)) = (read("level"), read("size")) else {
            continue;
        };
        let (Ok(level), Some(bytes)) = (level.trim().parse::<u32>(), parse_cache_size(&size))
        else {
            continue;
        };
        if best.is_none_or(|(l, _)| level > l) {
            best = Some((level, bytes));
        }
    }
    best.map(|(_, b)| b)
}

/// `32768K`, `1M`, `512` (bytes).
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

/// The default buffer: 8 times the last-level cache, at least 256 MiB.
pub fn default_buffer_bytes() -> usize {
    (8 * last_level_cache_bytes().unwrap_or(32 << 20)).max(256 << 20)
}

/// Read bandwidth with every thread of `pool` summing its share of a `bytes` buffer: the
/// median of `reps` passes, after one untimed pass (page faults, first touch).
pub fn read_bandwidth(pool: &ThreadPool, bytes: usize, reps: usize) -> ProbeRow {
    let threads = pool.threads();
    // Each thread's share is a whole number of 64-byte lines.
    let words = (bytes / 8).div_ceil(8 * threads) * 8 * threads;
    let buf: Vec<u64> = (0..words as u64).collect();
    let share = words / threads;
    let mut runs = Vec::new();
    for rep in 0..=reps.max(1) {
        let t = Instant::now();
        pool.run(threads, &|i| {
            std::hint::black_box(sum_words(&buf[i * share..(i + 1) * share]));
        });
        if rep > 0 {
            runs.push(t.elapsed());
        }
    }
    ProbeRow {
        test: "read_bandwidth",
        threads,
        per_second: (words * 8) as f64 / median(runs).as_secs_f64().max(1e-12),
        detail: format!("{} MiB buffer", (words * 8) >> 20),
    }
}

/// The int8 multiply-add rate with every thread of `pool` issuing independent dot-product
/// instructions on registers (no memory traffic): the machine's peak for that instruction.
pub fn int8_peak(pool: &ThreadPool, reps: usize) -> Option<ProbeRow> {
    let isa = Isa::detect();
    let (per_iter, name): (u64, &str) = match isa {
        Isa::Avx512Vnni => (MAC_CHAINS * 64, "vpdpbusd zmm"),
        Isa::Avx2 | Isa::Avx512 => (MAC_CHAINS * 32, "vpmaddubsw ymm"),
        Isa::Scalar => return None,
    };
    let threads = pool.threads();
    let iters: u64 = 2_000_000;
    let mut runs = Vec::new();
    for rep in 0..=reps.max(1) {
        let t = Instant::now();
        pool.run(threads, &|_| {
            std::hint::black_box(x86::mac_loop(isa, std::hint::black_box(iters)));
        });
        if rep > 0 {
            runs.push(t.elapsed());
        }
    }
    let macs = per_iter * iters * threads as u64;
    Some(ProbeRow {
        test: "int8_macs",
        threads,
        per_second: macs as f64 / median(runs).as_secs_f64().max(1e-12),
        detail: name.into(),
    })
}

/// Independent accumulator chains per loop iteration: enough to cover the instruction's
/// latency on every port that issues it.
const MAC_CHAINS: u64 = 12;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Wrapping sum of `v`, eight independent lanes so the loads are the bound.
fn sum_words(v: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in v.chunks_exact(8) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use crate::kernels::Isa;

    /// `iters` iterations of [`super::MAC_CHAINS`] independent int8 dot products.
    pub fn mac_loop(isa: Isa, iters: u64) -> i32 {
        match isa {
            // SAFETY: `Isa::detect` found every feature the function is compiled with.
            Isa::Avx512Vnni => unsafe { vnni(iters) },
            // SAFETY: as above (AVX-512 implies AVX2).
            Isa::Avx2 | Isa::Avx512 => unsafe { maddubs(iters) },
            Isa::Scalar => 0,
        }
    }

    /// Twelve named accumulators (not an array, so they stay in registers at any opt-level),
    /// each `$c = $op` (an expression of `$c`) per iteration; no closures, so everything
    /// compiles with the enclosing function's target features.
    macro_rules! chains {
        ($zero:expr, $iters:expr, |$c:ident| $op:expr, $add:path) => {{
            let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) =
                ($zero, $zero, $zero, $zero, $zero, $zero);
            let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) =
                ($zero, $zero, $zero, $zero, $zero, $zero);
            for _ in 0..$iters {
                c0 = {
                    let $c = c0;
                    $op
                };
                c1 = {
                    let $c = c1;
                    $op
                };
                c2 = {
                    let $c = c2;
                    $op
                };
                c3 = {
                    let $c = c3;
                    $op
                };
                c4 = {
                    let $c = c4;
                    $op
                };
                c5 = {
                    let $c = c5;
                    $op
                };
                c6 = {
                    let $c = c6;
                    $op
                };
                c7 = {
                    let $c = c7;
                    $op
                };
                c8 = {
                    let $c = c8;
                    $op
                };
                c9 = {
                    let $c = c9;
                    $op
                };
                c10 = {
                    let $c = c10;
                    $op
                };
                c11 = {
                    let $c = c11;
                    $op
                };
            }
            let s = $add(
                $add($add(c0, c1), $add(c2, c3)),
                $add($add(c4, c5), $add(c6, c7)),
            );
            $add(s, $add($add(c8, c9), $add(c10, c11)))
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn vnni(iters: u64) -> i32 {
        let a = _mm512_set1_epi8(std::hint::black_box(1));
        let b = _mm512_set1_epi8(std::hint::black_box(1));
        let s = chains!(
            _mm512_setzero_si512(),
            iters,
            |c| _mm512_dpbusd_epi32(c, a, b),
            _mm512_add_epi32
        );
        _mm512_reduce_add_epi32(s)
    }

    #[target_feature(enable = "avx2")]
    fn maddubs(iters: u64) -> i32 {
        let b = _mm256_set1_epi8(std::hint::black_box(1));
        // Each product feeds the next as its u8 operand, so no iteration can be hoisted; the
        // i16 sums wrap, only the instruction rate matters.
        let s = chains!(
            _mm256_set1_epi8(std::hint::black_box(1)),
            iters,
            |c| _mm256_maddubs_epi16(c, b),
            _mm256_add_epi16
        );
        _mm256_extract_epi32::<0>(s)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub fn mac_loop(_isa: crate::kernels::Isa, _iters: u64) -> i32 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("lots"), None);
    }

    #[test]
    fn the_sum_reads_every_word() {
        let v: Vec<u64> = (0..1000).collect();
        // 1000 words: 125 whole lines of 8.
        assert_eq!(sum_words(&v), 999 * 1000 / 2);
    }

    #[test]
    fn probes_report_positive_rates() {
        let pool = ThreadPool::new(2);
        let bw = read_bandwidth(&pool, 4 << 20, 1);
        assert_eq!((bw.test, bw.threads), ("read_bandwidth", 2));
        assert!(
            bw.per_second > 0.0 && bw.detail.starts_with("4 MiB"),
            "{bw:?}"
        );
        if let Some(mac) = int8_peak(&pool, 1) {
            assert!(mac.per_second > 0.0, "{mac:?}");
        }
    }
}
