//! Still's training engine on candle.
//!
//! A Qwen2-architecture model of its own ([`model`]) with Hugging Face tensor names, trained by
//! SFT on teacher traces or logit distillation ([`train`]) with an AdamW of its own ([`optim`]);
//! HF folders in and out ([`hf`]); generation with a KV cache ([`generate`]) and answer checking
//! ([`eval`]); a synthetic reasoning task ([`synth`]). **This crate never depends on axum or
//! sqlx**: a GPU worker links it with an HTTP client only.

/// candle, re-exported so users of the engine name the same types (`DType`, `Device`).
pub use candle_core as candle;

pub mod alloc;
pub mod attention;
pub mod budget;
pub mod config;
pub mod data;
pub mod eval;
pub mod fsio;
pub mod fused;
mod gemm;
pub mod generate;
pub mod head_loss;
pub mod hf;
pub mod loss;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
mod pool;
pub mod rng;
pub mod serve;
pub mod simd;
mod skinny;
pub mod synth;
pub mod tokenizer;
pub mod topk;
pub mod train;

/// Engine errors name the file, tensor or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("config: {0}")]
    Config(String),
    #[error("model: {0}")]
    Model(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("data: {0}")]
    Data(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The device to train on: `cpu`, or `cuda:N` when built with the `cuda` feature.
pub fn device(name: &str) -> Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        other => {
            match other.strip_prefix("cuda") {
                Some(rest) => {
                    let ordinal = rest.trim_start_matches(':').parse::<usize>().unwrap_or(0);
                    candle_core::Device::new_cuda(ordinal).map_err(|e| {
                    EngineError::Config(format!("device '{other}': {e} (build with --features cuda on a machine with CUDA)"))
                })
                }
                None => Err(EngineError::Config(format!(
                    "device '{other}': expected cpu or cuda:N"
                ))),
            }
        }
    }
}
