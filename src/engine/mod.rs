//! The LLM engine: GGUF loading, tokenizer, chat template, sampling and the worker thread that owns the
//! model. Knows nothing of HTTP or storage. Split by role: `model/` (the file, the forward pass, its
//! loading, tokenizer and template), `kernels/` (the CPU matmuls, attention, the parallel scheduler),
//! `run/` (generation and the worker thread) and `tools/` (synthetic models, logits inspection).

pub mod kernels;
pub mod model;
pub mod run;
pub mod tools;

// The modules by their short names, as the rest of the crate, the tests and the benchmarks name them.
pub use kernels::{attention, packed, spin_pool, tile_cache};
pub(crate) use model::load_phases;
pub use model::{arch, chat_template, gguf, llama, tokenizer};
pub use run::{generation, sampling, stream_decoder, worker};
pub use tools::{inspect, synth};

use std::path::PathBuf;

pub use chat_template::{ChatMessage, Role, TemplateChoice};
pub use generation::{
    Conversation, FinishReason, GenerationSummary, Llm, LlmOptions, Sequence, Timings, Usage,
};
pub use sampling::SamplingParams;
pub use worker::{GenerateRequest, GenerationEvent, LlmHandle, Prompt};

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {0}")]
    ModelNotFound(PathBuf),
    #[error("cannot use model {path}: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error(
        "the prompt needs {tokens} tokens but the context window holds {limit}; shorten the \
         conversation or the retrieved context"
    )]
    ContextOverflow { tokens: usize, limit: usize },
    #[error("the generation queue is full ({queue_depth} waiting); retry shortly")]
    Overloaded { queue_depth: usize },
    #[error(
        "the prompt and answer need {needed_mb} MiB of KV cache but the budget is {budget_mb} MiB \
         (NOVAPAY_KV_BUDGET_MB); shorten the conversation or the answer"
    )]
    OverBudget { needed_mb: usize, budget_mb: usize },
    #[error("the model worker is unavailable: {0}")]
    Unavailable(String),
    #[error("internal engine error: {0}")]
    Internal(String),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Internal(e.to_string())
    }
}

/// Deterministic pseudo-random values in (-spread/2, spread/2), for the kernels' tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64, spread: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * spread
        })
        .collect()
}
