//! Which decoder families the engine runs (`general.architecture`) and what differs between them: the
//! metadata key prefix, the RoPE layout, biases on Q/K/V, Llama 3's RoPE frequency factors and Gemma 3's
//! extra norms, GeGLU and local/global attention layers. The forward pass (`llama.rs`) is one for all of
//! them; this table is the only place a family is named.

use crate::engine::gguf::GgufFile;
use crate::engine::EngineError;

/// The `general.architecture` values the engine runs, as the error for any other names them.
pub const SUPPORTED: &[&str] = &["llama", "qwen2", "gemma3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3.x, SmolLM2, Mistral: no biases, interleaved RoPE (llama.cpp permutes Q/K at
    /// conversion for it), optional `rope_freqs.weight`.
    Llama,
    /// Qwen2 / Qwen2.5: Llama's decoder plus Q/K/V biases, NeoX (half-split) RoPE.
    Qwen2,
    /// Gemma 3: embeddings scaled by sqrt(hidden), RMS norms after attention and after the MLP too,
    /// Q/K RMS-normalised per head, GeGLU (tanh GELU), NeoX RoPE, and sliding-window (local) layers
    /// with their own RoPE base between global ones. The GGUF's norm weights already hold Gemma's
    /// `1 + weight` (llama.cpp's converter adds the 1), so every norm is a plain RMSNorm here.
    Gemma3,
}

impl std::str::FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(format!(
                "unknown architecture `{other}` ({})",
                SUPPORTED.join(" or ")
            )),
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (0, 1), (2, 3), ... (llama.cpp's `LLAMA_ROPE_TYPE_NORM`).
    Interleaved,
    /// Pairs (i, i + d/2) (llama.cpp's `LLAMA_ROPE_TYPE_NEOX`).
    Neox,
}

impl Architecture {
    /// Reads `general.architecture`; any other family is refused here, from the header alone, before
    /// the tokenizer is built or a weight is read.
    pub fn of(gguf: &GgufFile) -> Result<Self, EngineError> {
        let arch = gguf.get_str("general.architecture").unwrap_or("");
        arch.parse().map_err(|_| EngineError::BadModel {
            path: gguf.path.clone(),
            reason: format!(
                "architecture `{arch}` is not supported; novapay runs {} GGUFs (Llama 3.x, \
                 SmolLM2, Mistral; Qwen2 and Qwen2.5; Gemma 3)",
                SUPPORTED.join(", ")
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
        }
    }

    /// The metadata key `{arch}.{key}`, e.g. `qwen2.block_count`.
    pub fn key(self, key: &str) -> String {
        format!("{}.{key}", self.name())
    }

    pub fn rope_style(self) -> RopeStyle {
        match self {
            Self::Llama => RopeStyle::Interleaved,
            Self::Qwen2 | Self::Gemma3 => RopeStyle::Neox,
        }
    }

    /// Q, K and V projections carry biases (`blk.N.attn_q.bias`, ...), required as llama.cpp requires
    /// them.
    pub fn qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }

    /// `rope_freqs.weight` (Llama 3's frequency scaling) is read when present; llama.cpp ignores it
    /// for the other families, so a stray one must not change their RoPE here either.
    pub fn rope_freq_factors(self) -> bool {
        matches!(self, Self::Llama)
    }

    /// RoPE's base when the file does not state it (llama.cpp's defaults).
    pub fn default_freq_base(self) -> f32 {
        10_000.0
    }

    /// RMSNorm epsilon when the file does not state it.
    pub fn default_rms_eps(self) -> f32 {
        match self {
            Self::Llama => 1e-5,
            Self::Qwen2 | Self::Gemma3 => 1e-6,
        }
    }

    /// Gemma 3's layer layout: norms after attention and after the MLP, Q/K norms, GeGLU, embeddings
    /// scaled by sqrt(hidden), local and global attention layers.
    pub fn gemma(self) -> bool {
        matches!(self, Self::Gemma3)
    }
}
