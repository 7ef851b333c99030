//! Next-token choice: greedy by default; temperature with top-k / top-p and a seed; repeat penalty.
//! The sampling itself is candle-transformers' `LogitsProcessor`.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::engine::EngineError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy (arg-max).
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: u64,
    /// 1.0 disables the penalty.
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    pub max_new_tokens: usize,
    /// Keep generating past end-of-turn tokens (benchmarks only).
    pub ignore_eos: bool,
    /// Generation ends where the text would contain one of these (which is not emitted).
    pub stop: Vec<String>,
    /// Unit tests only: the forward pass that would produce this completion token fails, as an
    /// engine error half-way through a batch would.
    #[cfg(test)]
    #[serde(skip)]
    pub fail_at_token: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            seed: 299_792_458,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            max_new_tokens: 256,
            ignore_eos: false,
            stop: Vec::new(),
            #[cfg(test)]
            fail_at_token: None,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::InvalidInput(m.to_string()));
        if !(0.0..=5.0).contains(&self.temperature) {
            return bad("temperature must be between 0 and 5");
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p must be in (0, 1]");
            }
        }
        if self.top_k == Some(0) {
            return bad("top_k must be at least 1");
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad("repeat_penalty must be positive");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1");
        }
        Ok(())
    }
}

pub struct Sampler {
    processor: LogitsProcessor,
    repeat_penalty: f32,
    repeat_last_n: usize,
}

impl Sampler {
    pub fn new(p: &SamplingParams) -> Self {
        let sampling = if p.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            let temperature = p.temperature;
            match (p.top_k, p.top_p) {
                (None, None) => Sampling::All { temperature },
                (Some(k), None) => Sampling::TopK { k, temperature },
                (None, Some(p)) => Sampling::TopP { p, temperature },
                (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
            }
        };
        Self {
            processor: LogitsProcessor::from_sampling(p.seed, sampling),
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n,
        }
    }

    /// `history` is the tokens generated so far; the penalty looks at its tail.
    pub fn next(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, EngineError> {
        let logits = if (self.repeat_penalty - 1.0).abs() > f32::EPSILON {
            let start = history.len().saturating_sub(self.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(
                logits,
                self.repeat_penalty,
                &history[start..],
            )?
        } else {
            logits.clone()
        };
        Ok(self.processor.sample(&logits)?)
    }
}
