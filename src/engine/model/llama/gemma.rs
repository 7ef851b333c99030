//! What Gemma 3 adds to the decoder (`Architecture::Gemma3`), as llama.cpp's `llm_build_gemma3` runs
//! it: the token embedding scaled by sqrt(hidden), Q and K RMS-normalised per head before RoPE, an RMS
//! norm on the attention output and on the MLP output before each residual add, GeGLU with the tanh
//! GELU, and layers that attend to a sliding window of recent positions (local, RoPE base 10,000) between
//! layers that see everything (global, the file's RoPE base and linear scaling).

use candle_core::{DType, Device, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use super::elementwise;

/// Gemma 3's extra tensors and attention span of one layer.
pub(super) struct GemmaLayer {
    pub(super) q_norm: RmsNorm,
    pub(super) k_norm: RmsNorm,
    pub(super) post_attn_norm: RmsNorm,
    pub(super) post_ffn_norm: RmsNorm,
    /// The sliding window of a local layer; `None` on global layers.
    pub(super) window: Option<usize>,
}

/// Gemma 3's model-wide settings.
pub(super) struct GemmaModel {
    /// sqrt(hidden), in f32 as llama.cpp computes it.
    pub(super) embed_scale: f32,
    /// RoPE tables of the local layers (their own base, no scaling).
    pub(super) local_cos: Tensor,
    pub(super) local_sin: Tensor,
    /// Factor applied to the queries so that the attention kernel's 1/sqrt(head_dim) becomes the
    /// model's scale; `None` when they are the same (every Gemma 3 but the 27B).
    pub(super) query_factor: Option<f64>,
    /// `final_logit_softcapping`: logits become `cap * tanh(logits / cap)`.
    pub(super) final_softcap: Option<f32>,
}

/// The tanh approximation of GELU, in f32.
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// `gelu_tanh(gate) * up` (GeGLU), value by value, so a row's result does not depend on its batch.
pub(super) fn gelu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    elementwise(gate, up, |g, u| gelu_tanh(g) * u, || gate.gelu()? * up)
}

/// `x * factor`, value by value.
pub(super) fn scale(x: &Tensor, factor: f32) -> candle_core::Result<Tensor> {
    x.affine(factor as f64, 0.0)
}

/// `cap * tanh(logits / cap)`.
pub(super) fn softcap(logits: &Tensor, cap: f32) -> candle_core::Result<Tensor> {
    (logits / cap as f64)?.tanh()? * cap as f64
}

/// The (rows, index_pos + rows) mask of a sliding-window layer, 1 where a query may not look: later
/// positions, and those `window` or more positions back (llama.cpp's `LLAMA_SWA_TYPE_STANDARD`).
pub(super) fn sliding_window_mask(
    rows: usize,
    index_pos: usize,
    window: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let cols = index_pos + rows;
    let mask: Vec<u8> = (0..rows)
        .flat_map(|i| {
            let pos = index_pos + i;
            (0..cols).map(move |j| u8::from(j > pos || pos - j >= window))
        })
        .collect();
    Tensor::from_slice(&mask, (rows, cols), device)
}

/// The last `window` positions of a (b, kv_heads, positions, head_dim) cache read back as f32.
pub(super) fn last_positions(t: &Tensor, window: Option<usize>) -> candle_core::Result<Tensor> {
    let len = t.dim(2)?;
    match window {
        Some(w) if w < len => t.narrow(2, len - w, w)?.contiguous(),
        _ => Ok(t.clone()),
    }
}

/// RMS norm of each head of a (b, s, heads, head_dim) tensor (Gemma's Q/K norms).
pub(super) fn per_head_norm(norm: &RmsNorm, x: &Tensor) -> candle_core::Result<Tensor> {
    use candle_core::Module;
    norm.forward(&x.contiguous()?)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_is_candles_gelu() {
        let dev = Device::Cpu;
        let xs: Vec<f32> = (-80..=80).map(|i| i as f32 / 8.0).collect();
        let t = Tensor::from_vec(xs.clone(), xs.len(), &dev).unwrap();
        let want = t.gelu().unwrap().to_vec1::<f32>().unwrap();
        for (x, w) in xs.iter().zip(want) {
            assert!((gelu_tanh(*x) - w).abs() <= 1e-5 * (1.0 + w.abs()), "{x}");
        }
    }

    #[test]
    fn sliding_window_mask_keeps_the_last_window_positions() {
        let m = sliding_window_mask(3, 4, 3, &Device::Cpu)
            .unwrap()
            .to_vec2::<u8>()
            .unwrap();
        // Query positions 4, 5, 6 over keys 0..7: each sees itself and the two before.
        assert_eq!(m[0], [1, 1, 0, 0, 0, 1, 1]);
        assert_eq!(m[1], [1, 1, 1, 0, 0, 0, 1]);
        assert_eq!(m[2], [1, 1, 1, 1, 0, 0, 0]);
    }
}
