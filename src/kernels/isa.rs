//! Which instruction set the kernels run on: detected once per process, overridable downwards
//! with `WICK_KERNELS` (for benchmarks and for checking a fallback on a bigger CPU).

use std::sync::OnceLock;

/// A kernel family. Later variants need more of the CPU; each implies the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust: any CPU, and the oracle the SIMD kernels are tested against.
    Scalar,
    /// AVX2 + FMA + F16C: 8 output columns per vector, `vpmaddubsw` for the int8 products.
    Avx2,
    /// AVX-512 F/BW without VNNI: 16 columns per vector, `vpmaddubsw` as on AVX2.
    Avx512,
    /// AVX-512 with VNNI: `vpdpbusd` does four u8 x i8 products and the sum in one instruction.
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The best family this CPU runs, lowered to `WICK_KERNELS` (`scalar`, `avx2`, `avx512`,
    /// `avx512vnni`) when that is set. Detected on the first call, then cached.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Isa::ALL
                .into_iter()
                .rev()
                .find(|isa| isa.is_supported())
                .unwrap_or(Isa::Scalar);
            match std::env::var("WICK_KERNELS").ok().as_deref().map(Isa::parse) {
                Some(Some(wanted)) if wanted <= best => wanted,
                Some(wanted) => {
                    tracing::warn!(
                        ?wanted,
                        ?best,
                        "WICK_KERNELS names a kernel family this CPU cannot run (or none); using the best it can"
                    );
                    best
                }
                None => best,
            }
        })
    }

    /// Parses the names `WICK_KERNELS` takes.
    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            "avx512vnni" => Some(Isa::Avx512Vnni),
            _ => None,
        }
    }

    /// Whether this CPU has every feature the family's kernels are compiled with.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 =
                avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
            match self {
                Isa::Scalar => true,
                Isa::Avx2 => avx2,
                Isa::Avx512 => avx512,
                Isa::Avx512Vnni => avx512 && is_x86_feature_detected!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }

    /// Every family this CPU runs, the scalar one first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }
}
