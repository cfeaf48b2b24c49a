//! Which vector instructions the engine's CPU work runs with, for the benchmarks' tables.
//!
//! The matrix products are the `gemm` crate's: with its `x86-v4` feature compiled in, it picks
//! AVX-512 kernels at run time where the CPU has them, and AVX2 + FMA kernels elsewhere (the
//! same results either way: the bit-exactness tests pass on both). The engine's own row kernels
//! (softmax rows, SwiGLU, RMSNorm, AdamW) are built for the target's baseline: compiled for
//! AVX-512 and chosen at run time they measured no faster on the engine bench (docs/BENCHMARKS.md,
//! 2026-12-01, fourth session), so they are not multiversioned.

use std::sync::OnceLock;

/// The vector instruction sets of a CPU, widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Baseline,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "AVX-512 (F/BW/DQ/VL)",
            Level::Avx2 => "AVX2 + FMA",
            Level::Baseline => "baseline (SSE2 / the target's default)",
        }
    }
}

/// The widest level this CPU runs (read once).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// What the matrix products and the kernels run with on this machine, in words.
pub fn describe() -> String {
    #[cfg(target_arch = "x86_64")]
    let products = if std::arch::is_x86_feature_detected!("avx512f") {
        "gemm's AVX-512F kernels (x86-v4)"
    } else if std::arch::is_x86_feature_detected!("avx2") {
        "gemm's AVX2 + FMA kernels"
    } else {
        "gemm's baseline kernels"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let products = "gemm's kernels for this architecture";
    format!(
        "CPU: {}; products: {products}; row kernels: the target's baseline",
        level().name()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_description_names_the_products_and_the_cpu() {
        let text = super::describe();
        assert!(text.contains("products: gemm's"), "{text}");
        assert!(text.starts_with("CPU: "), "{text}");
    }
}
