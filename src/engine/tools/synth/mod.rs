//! Llama-3.2-, Qwen2.5- and Gemma-3-shaped GGUF files with random weights and real metadata, written
//! deterministically from a seed. The product's models (Llama 3.2 3B, Qwen2.5 3B, Gemma 3 4B) cannot be downloaded
//! on the build machines, and neither their correctness (RoPE layout and scaling, GQA, Q/K/V biases,
//! tied embeddings, K-quants, the 128,256- and 151,936-token vocabularies) nor their speed depends on
//! the trained weight values: both engines read the same file, so logits can be compared with
//! llama.cpp's and speed measured at the real size.
//!
//! Everything here is integer arithmetic or exactly rounded float operations on a SplitMix64 stream, and
//! candle's quantizers are deterministic, so the same (shape, quant, seed) gives byte-identical files.

use std::io::{Seek, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::engine::arch::Architecture;
use crate::engine::EngineError;

mod gemma_vocab;
mod vocab;

pub use gemma_vocab::{
    GEMMA3_BOS, GEMMA3_END_OF_TURN, GEMMA3_EOS, GEMMA3_START_OF_TURN, GEMMA3_VOCAB,
};
pub use vocab::{
    LLAMA3_BOS as BOS_ID, LLAMA3_EOT as EOT_ID, LLAMA3_VOCAB as VOCAB, QWEN2_ENDOFTEXT,
    QWEN2_IM_END, QWEN2_IM_START, QWEN2_VOCAB,
};

/// The chat template the synthetic files carry (Llama 3's turn format without the date preamble).
pub const CHAT_TEMPLATE: &str = "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + \
message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// Qwen2.5 Instruct's chat template (ChatML with a default system turn and the tool-call branches), as
/// its tokenizer_config.json ships it and llama.cpp's converter copies it into the GGUF.
pub const QWEN2_CHAT_TEMPLATE: &str = include_str!("qwen2_5_chat_template.jinja");

/// Llama 3.1/3.2 "llama3" RoPE scaling, as Meta's config.json states it.
const ROPE_SCALING_FACTOR: f64 = 32.0;
const ROPE_LOW_FREQ_FACTOR: f64 = 1.0;
const ROPE_HIGH_FREQ_FACTOR: f64 = 4.0;
const ROPE_ORIGINAL_CONTEXT: f64 = 8192.0;
const ROPE_THETA: f32 = 500_000.0;
/// Qwen2.5's `rope_theta`.
const QWEN2_ROPE_THETA: f32 = 1_000_000.0;
/// Gemma 3's global layers' `rope_theta` and linear `rope_scaling` factor (4B and up; config.json).
const GEMMA3_ROPE_THETA: f32 = 1_000_000.0;
const GEMMA3_ROPE_SCALING_FACTOR: f32 = 8.0;

/// Gemma 3 Instruct's chat template, as its tokenizer_config.json ships it and llama.cpp's converter
/// copies it into the GGUF.
pub const GEMMA3_CHAT_TEMPLATE: &str = crate::engine::chat_template::GEMMA_TEMPLATE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub ffn: usize,
    /// Width of a head when it is not hidden / heads (Gemma: `attention.key_length`).
    pub head_dim_override: Option<usize>,
    /// Gemma 3's local layers' window (`attention.sliding_window`).
    pub sliding_window: Option<usize>,
}

impl Shape {
    /// Llama 3.2 3B.
    pub const LLAMA_3_2_3B: Shape = Shape {
        n_layer: 28,
        hidden: 3072,
        n_head: 24,
        n_kv_head: 8,
        ffn: 8192,
        head_dim_override: None,
        sliding_window: None,
    };
    /// A few tens of MB (the 128,256-row embedding dominates), head_dim 128 like the real model so the
    /// scaled low RoPE frequencies are exercised, GQA 2:1.
    pub const TINY: Shape = Shape {
        n_layer: 2,
        hidden: 256,
        n_head: 2,
        n_kv_head: 1,
        ffn: 768,
        head_dim_override: None,
        sliding_window: None,
    };

    /// Qwen2.5 3B: 16 heads of 128, GQA 8:1, a tied 151,936-row embedding.
    pub const QWEN2_5_3B: Shape = Shape {
        n_layer: 36,
        hidden: 2048,
        n_head: 16,
        n_kv_head: 2,
        ffn: 11008,
        head_dim_override: None,
        sliding_window: None,
    };

    /// Gemma 3 4B (google/gemma-3-4b-it config.json, text_config): 34 layers of 2560, 8 heads of 256
    /// over 4 KV heads, MLP 10240, local layers' window 1024.
    pub const GEMMA3_4B: Shape = Shape {
        n_layer: 34,
        hidden: 2560,
        n_head: 8,
        n_kv_head: 4,
        ffn: 10240,
        head_dim_override: Some(256),
        sliding_window: Some(1024),
    };

    /// Gemma 3's layout at test size: six layers (five local, the sixth global, as in every group of
    /// six of the real models), heads of 256 wider than hidden / heads as in the real models, and a
    /// 16-position window so the fixture's 64-token prompt slides it.
    pub const GEMMA3_TINY: Shape = Shape {
        n_layer: 6,
        hidden: 256,
        n_head: 2,
        n_kv_head: 1,
        ffn: 768,
        head_dim_override: Some(256),
        sliding_window: Some(16),
    };

    pub fn head_dim(&self) -> usize {
        self.head_dim_override.unwrap_or(self.hidden / self.n_head)
    }

    /// `tiny` (the same small shape for every family) or `3b` (the family's 3B model).
    pub fn named(arch: Architecture, name: &str) -> Result<Self, String> {
        match (name, arch) {
            ("tiny", Architecture::Gemma3) => Ok(Self::GEMMA3_TINY),
            ("tiny", _) => Ok(Self::TINY),
            ("3b", Architecture::Llama) => Ok(Self::LLAMA_3_2_3B),
            ("3b", Architecture::Qwen2) => Ok(Self::QWEN2_5_3B),
            ("4b", Architecture::Gemma3) => Ok(Self::GEMMA3_4B),
            (other, Architecture::Gemma3) => {
                Err(format!("unknown shape `{other}` for gemma3 (tiny or 4b)"))
            }
            (other, _) => Err(format!("unknown shape `{other}` (tiny or 3b)")),
        }
    }
}

/// Weight types of the matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// llama.cpp's Q4_K_M mix: Q6_K for the token embedding and for attn_v / ffn_down in the layers
    /// llama.cpp gives more bits, Q4_K for the rest.
    Q4KM,
    /// Every matrix Q4_K except the token embedding (Q6_K, as llama.cpp does for the output matrix).
    Q4K,
    Q6K,
    Q8_0,
}

impl std::str::FromStr for Quant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Ok(Self::Q4KM),
            "q4_k" => Ok(Self::Q4K),
            "q6_k" => Ok(Self::Q6K),
            "q8_0" => Ok(Self::Q8_0),
            other => Err(format!(
                "unknown quant `{other}` (q4_k_m, q4_k, q6_k or q8_0)"
            )),
        }
    }
}

impl Quant {
    /// llama.cpp's `llama_ftype` for `general.file_type`.
    fn file_type(self) -> u32 {
        match self {
            Quant::Q4KM => 15,
            Quant::Q4K => 14, // MOSTLY_Q4_K_S
            Quant::Q6K => 18,
            Quant::Q8_0 => 7,
        }
    }

    fn matrix_type(self, role: Role, layer: usize, n_layer: usize) -> GgmlDType {
        match self {
            Quant::Q8_0 => GgmlDType::Q8_0,
            Quant::Q6K => GgmlDType::Q6K,
            Quant::Q4K => match role {
                Role::Embedding => GgmlDType::Q6K,
                _ => GgmlDType::Q4K,
            },
            Quant::Q4KM => match role {
                Role::Embedding => GgmlDType::Q6K,
                Role::AttnV | Role::FfnDown if more_bits(layer, n_layer) => GgmlDType::Q6K,
                _ => GgmlDType::Q4K,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Embedding,
    AttnV,
    FfnDown,
    Other,
}

/// llama.cpp's `use_more_bits` (llama-quant.cpp): the first and last eighth of the layers and every
/// third one between.
fn more_bits(layer: usize, n_layer: usize) -> bool {
    layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2
}

#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Llama (Llama 3.2's metadata, vocabulary and RoPE scaling) or Qwen2 (Qwen2.5's, with Q/K/V
    /// biases).
    pub arch: Architecture,
    pub shape: Shape,
    pub quant: Quant,
    pub seed: u64,
}

/// SplitMix64: tiny, fast and fully specified, so the weights do not depend on a crate's version.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1) from 24 random bits (exact in f32).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) / (1u32 << 23) as f32 - 1.0
    }
}

/// A seed per tensor name, so that tensors do not depend on the order they are made in.
fn tensor_rng(seed: u64, name: &str) -> Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    Rng(h)
}

/// A (rows, cols) matrix, uniform with standard deviation `std`.
fn random_matrix(
    seed: u64,
    name: &str,
    rows: usize,
    cols: usize,
    std: f32,
) -> candle_core::Result<Tensor> {
    let mut rng = tensor_rng(seed, name);
    // U(-a, a) has standard deviation a / sqrt(3).
    let a = std * 3f32.sqrt();
    let data: Vec<f32> = (0..rows * cols).map(|_| rng.unit() * a).collect();
    Tensor::from_vec(data, (rows, cols), &Device::Cpu)
}

/// RMSNorm weights around 1 (not exactly 1, so a norm whose weight is ignored shows in the logits).
fn random_norm(seed: u64, name: &str, n: usize) -> candle_core::Result<QTensor> {
    let mut rng = tensor_rng(seed, name);
    let data: Vec<f32> = (0..n).map(|_| 1.0 + 0.2 * rng.unit()).collect();
    QTensor::quantize(&Tensor::from_vec(data, n, &Device::Cpu)?, GgmlDType::F32)
}

/// A Q/K/V bias, F32 as llama.cpp keeps them, of the projections' own scale (std 0.5 against
/// outputs of std ~1), so a bias that is dropped or added twice moves the logits well past noise.
fn random_bias(seed: u64, name: &str, n: usize) -> candle_core::Result<(String, QTensor)> {
    let mut rng = tensor_rng(seed, name);
    let a = 0.5 * 3f32.sqrt();
    let data: Vec<f32> = (0..n).map(|_| rng.unit() * a).collect();
    let t = QTensor::quantize(&Tensor::from_vec(data, n, &Device::Cpu)?, GgmlDType::F32)?;
    Ok((name.to_string(), t))
}

/// Llama 3's `rope_freqs.weight`: the divisor of each RoPE frequency (llama.cpp divides by it).
pub fn llama3_rope_factors(head_dim: usize) -> Vec<f32> {
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / (ROPE_THETA as f64).powf(i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let low_wavelen = ROPE_ORIGINAL_CONTEXT / ROPE_LOW_FREQ_FACTOR;
            let high_wavelen = ROPE_ORIGINAL_CONTEXT / ROPE_HIGH_FREQ_FACTOR;
            let factor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                ROPE_SCALING_FACTOR
            } else {
                let smooth = (ROPE_ORIGINAL_CONTEXT / wavelen - ROPE_LOW_FREQ_FACTOR)
                    / (ROPE_HIGH_FREQ_FACTOR - ROPE_LOW_FREQ_FACTOR);
                1.0 / ((1.0 - smooth) / ROPE_SCALING_FACTOR + smooth)
            };
            factor as f32
        })
        .collect()
}

fn metadata(spec: &SynthSpec) -> Vec<(String, Value)> {
    match spec.arch {
        Architecture::Llama => llama_metadata(spec),
        Architecture::Qwen2 => qwen2_metadata(spec),
        Architecture::Gemma3 => gemma3_metadata(spec),
    }
}

fn floats(v: Vec<f32>) -> Value {
    Value::Array(v.into_iter().map(Value::F32).collect())
}

/// Gemma 3 Instruct's keys as llama.cpp's converter writes them (read off a converted Gemma 3 GGUF):
/// `gemma3.` hyperparameters with `key_length` / `value_length`, the sliding window, linear RoPE
/// scaling, and a SentencePiece (`llama`) vocabulary with scores, BOS added, no space prefix.
fn gemma3_metadata(spec: &SynthSpec) -> Vec<(String, Value)> {
    let s = &spec.shape;
    let v = gemma_vocab::gemma3();
    let types: Vec<i32> = v.types;
    vec![
        (
            "general.architecture".into(),
            Value::String("gemma3".into()),
        ),
        ("general.type".into(), Value::String("model".into())),
        (
            "general.name".into(),
            Value::String(format!(
                "synthetic-gemma-3-{}l-{}d-seed{}",
                s.n_layer, s.hidden, spec.seed
            )),
        ),
        ("general.basename".into(), Value::String("gemma-3".into())),
        ("general.finetune".into(), Value::String("it".into())),
        (
            "general.file_type".into(),
            Value::U32(spec.quant.file_type()),
        ),
        ("gemma3.context_length".into(), Value::U32(131_072)),
        ("gemma3.embedding_length".into(), u32v(s.hidden)),
        ("gemma3.block_count".into(), u32v(s.n_layer)),
        ("gemma3.feed_forward_length".into(), u32v(s.ffn)),
        ("gemma3.attention.head_count".into(), u32v(s.n_head)),
        (
            "gemma3.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-6),
        ),
        ("gemma3.attention.key_length".into(), u32v(s.head_dim())),
        ("gemma3.attention.value_length".into(), u32v(s.head_dim())),
        (
            "gemma3.rope.freq_base".into(),
            Value::F32(GEMMA3_ROPE_THETA),
        ),
        (
            "gemma3.attention.sliding_window".into(),
            u32v(s.sliding_window.unwrap_or(1024)),
        ),
        ("gemma3.attention.head_count_kv".into(), u32v(s.n_kv_head)),
        (
            "gemma3.rope.scaling.type".into(),
            Value::String("linear".into()),
        ),
        (
            "gemma3.rope.scaling.factor".into(),
            Value::F32(GEMMA3_ROPE_SCALING_FACTOR),
        ),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), strings(v.tokens)),
        ("tokenizer.ggml.scores".into(), floats(v.scores)),
        ("tokenizer.ggml.token_type".into(), self::types(types)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(gemma_vocab::GEMMA3_BOS),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(gemma_vocab::GEMMA3_EOS),
        ),
        (
            "tokenizer.ggml.unknown_token_id".into(),
            Value::U32(gemma_vocab::GEMMA3_UNK),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(gemma_vocab::GEMMA3_PAD),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(GEMMA3_CHAT_TEMPLATE.into()),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
    ]
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

fn types(v: Vec<i32>) -> Value {
    Value::Array(v.into_iter().map(Value::I32).collect())
}

fn u32v(v: usize) -> Value {
    Value::U32(v as u32)
}

fn llama_metadata(spec: &SynthSpec) -> Vec<(String, Value)> {
    let s = &spec.shape;
    let v = vocab::llama3();
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "general.name".into(),
            Value::String(format!(
                "synthetic-llama-3.2-{}l-{}d-seed{}",
                s.n_layer, s.hidden, spec.seed
            )),
        ),
        (
            "general.file_type".into(),
            Value::U32(spec.quant.file_type()),
        ),
        ("llama.context_length".into(), Value::U32(131_072)),
        ("llama.embedding_length".into(), u32v(s.hidden)),
        ("llama.block_count".into(), u32v(s.n_layer)),
        ("llama.feed_forward_length".into(), u32v(s.ffn)),
        ("llama.attention.head_count".into(), u32v(s.n_head)),
        ("llama.attention.head_count_kv".into(), u32v(s.n_kv_head)),
        ("llama.rope.freq_base".into(), Value::F32(ROPE_THETA)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.dimension_count".into(), u32v(s.head_dim())),
        ("llama.vocab_size".into(), u32v(VOCAB)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String("llama-bpe".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(v.tokens)),
        ("tokenizer.ggml.token_type".into(), types(v.types)),
        ("tokenizer.ggml.merges".into(), strings(v.merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(BOS_ID)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(EOT_ID)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHAT_TEMPLATE.into()),
        ),
    ]
}

/// Qwen2.5 Instruct's keys as llama.cpp's converter writes them: `qwen2.` hyperparameters, RoPE base
/// 1e6, RMS epsilon 1e-6, no BOS, `<|im_end|>` as EOS and `<|endoftext|>` as BOS and padding.
fn qwen2_metadata(spec: &SynthSpec) -> Vec<(String, Value)> {
    let s = &spec.shape;
    let v = vocab::qwen2();
    vec![
        ("general.architecture".into(), Value::String("qwen2".into())),
        ("general.type".into(), Value::String("model".into())),
        (
            "general.name".into(),
            Value::String(format!(
                "synthetic-qwen2.5-{}l-{}d-seed{}",
                s.n_layer, s.hidden, spec.seed
            )),
        ),
        ("general.finetune".into(), Value::String("Instruct".into())),
        ("general.basename".into(), Value::String("Qwen2.5".into())),
        (
            "general.file_type".into(),
            Value::U32(spec.quant.file_type()),
        ),
        ("qwen2.block_count".into(), u32v(s.n_layer)),
        ("qwen2.context_length".into(), Value::U32(32_768)),
        ("qwen2.embedding_length".into(), u32v(s.hidden)),
        ("qwen2.feed_forward_length".into(), u32v(s.ffn)),
        ("qwen2.attention.head_count".into(), u32v(s.n_head)),
        ("qwen2.attention.head_count_kv".into(), u32v(s.n_kv_head)),
        ("qwen2.rope.freq_base".into(), Value::F32(QWEN2_ROPE_THETA)),
        (
            "qwen2.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-6),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), strings(v.tokens)),
        ("tokenizer.ggml.token_type".into(), types(v.types)),
        ("tokenizer.ggml.merges".into(), strings(v.merges)),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(QWEN2_IM_END),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(QWEN2_ENDOFTEXT),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(QWEN2_ENDOFTEXT),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(QWEN2_CHAT_TEMPLATE.into()),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
    ]
}

/// Every tensor of the model, in llama.cpp's order, quantized.
fn tensors(spec: &SynthSpec) -> candle_core::Result<Vec<(String, QTensor)>> {
    let s = &spec.shape;
    let seed = spec.seed;
    let head_dim = s.head_dim();
    let kv_dim = s.n_kv_head * head_dim;
    let q_dim = s.n_head * head_dim;
    let gemma = spec.arch.gemma();
    let mut out = Vec::new();
    if spec.arch == Architecture::Llama {
        let factors = llama3_rope_factors(head_dim);
        let n = factors.len();
        out.push((
            "rope_freqs.weight".to_string(),
            QTensor::quantize(&Tensor::from_vec(factors, n, &Device::Cpu)?, GgmlDType::F32)?,
        ));
    }
    let vocab = match spec.arch {
        Architecture::Llama => VOCAB,
        Architecture::Qwen2 => QWEN2_VOCAB,
        Architecture::Gemma3 => GEMMA3_VOCAB,
    };
    let matrix = |name: &str, rows: usize, cols: usize, std: f32, dtype: GgmlDType| {
        let t = random_matrix(seed, name, rows, cols, std)?;
        QTensor::quantize(&t, dtype).map(|q| (name.to_string(), q))
    };
    // Embedding rows of std 0.1 give logits (tied output) of std ~0.1 * sqrt(hidden), so the top
    // tokens stand apart as in a trained model; matrices use 1/sqrt(fan-in).
    let emb_type = spec.quant.matrix_type(Role::Embedding, 0, s.n_layer);
    out.push(matrix("token_embd.weight", vocab, s.hidden, 0.1, emb_type)?);
    let fan_in = |n: usize| 1.0 / (n as f32).sqrt();
    for i in 0..s.n_layer {
        let p = format!("blk.{i}");
        let ty = |role| spec.quant.matrix_type(role, i, s.n_layer);
        out.push((
            format!("{p}.attn_norm.weight"),
            random_norm(seed, &format!("{p}.attn_norm.weight"), s.hidden)?,
        ));
        out.push(matrix(
            &format!("{p}.attn_q.weight"),
            q_dim,
            s.hidden,
            fan_in(s.hidden),
            ty(Role::Other),
        )?);
        if spec.arch.qkv_bias() {
            out.push(random_bias(seed, &format!("{p}.attn_q.bias"), q_dim)?);
        }
        out.push(matrix(
            &format!("{p}.attn_k.weight"),
            kv_dim,
            s.hidden,
            fan_in(s.hidden),
            ty(Role::Other),
        )?);
        if spec.arch.qkv_bias() {
            out.push(random_bias(seed, &format!("{p}.attn_k.bias"), kv_dim)?);
        }
        out.push(matrix(
            &format!("{p}.attn_v.weight"),
            kv_dim,
            s.hidden,
            fan_in(s.hidden),
            ty(Role::AttnV),
        )?);
        if spec.arch.qkv_bias() {
            out.push(random_bias(seed, &format!("{p}.attn_v.bias"), kv_dim)?);
        }
        out.push(matrix(
            &format!("{p}.attn_output.weight"),
            s.hidden,
            q_dim,
            fan_in(q_dim),
            ty(Role::Other),
        )?);
        if gemma {
            for (name, n) in [
                ("attn_q_norm", head_dim),
                ("attn_k_norm", head_dim),
                ("post_attention_norm", s.hidden),
                ("post_ffw_norm", s.hidden),
            ] {
                let name = format!("{p}.{name}.weight");
                out.push((name.clone(), random_norm(seed, &name, n)?));
            }
        }
        out.push((
            format!("{p}.ffn_norm.weight"),
            random_norm(seed, &format!("{p}.ffn_norm.weight"), s.hidden)?,
        ));
        out.push(matrix(
            &format!("{p}.ffn_gate.weight"),
            s.ffn,
            s.hidden,
            fan_in(s.hidden),
            ty(Role::Other),
        )?);
        out.push(matrix(
            &format!("{p}.ffn_up.weight"),
            s.ffn,
            s.hidden,
            fan_in(s.hidden),
            ty(Role::Other),
        )?);
        out.push(matrix(
            &format!("{p}.ffn_down.weight"),
            s.hidden,
            s.ffn,
            fan_in(s.ffn),
            ty(Role::FfnDown),
        )?);
    }
    out.push((
        "output_norm.weight".to_string(),
        random_norm(seed, "output_norm.weight", s.hidden)?,
    ));
    Ok(out)
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthReport {
    pub path: String,
    pub bytes: u64,
    pub tensors: usize,
    /// Tensor count per GGML type, e.g. {"Q4K": 168, "Q6K": 29}.
    pub types: std::collections::BTreeMap<String, usize>,
}

/// Writes the model to `out` (through a temporary file renamed at the end, so a crash never leaves a
/// half-written model under the final name).
pub fn write_synthetic_gguf(spec: &SynthSpec, out: &Path) -> Result<SynthReport, EngineError> {
    let err = |e: String| EngineError::Internal(format!("writing {}: {e}", out.display()));
    let s = &spec.shape;
    if s.n_head == 0
        || s.n_kv_head == 0
        || !(s.head_dim_override.is_some() || s.hidden.is_multiple_of(s.n_head))
        || !s.n_head.is_multiple_of(s.n_kv_head)
        || !s.hidden.is_multiple_of(256)
        || !(s.n_head * s.head_dim()).is_multiple_of(256)
    {
        return Err(EngineError::InvalidInput(format!(
            "shape {s:?}: hidden must be a multiple of 256 and of the head count, heads of KV heads"
        )));
    }
    let tensors = tensors(spec).map_err(|e| err(e.to_string()))?;
    let meta = metadata(spec);
    let mut types = std::collections::BTreeMap::new();
    for (_, t) in &tensors {
        *types.entry(format!("{:?}", t.dtype())).or_insert(0) += 1;
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = out.with_extension("gguf.partial");
    let write = || -> Result<(), String> {
        let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &meta_refs, &tensor_refs).map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        w.stream_position().map_err(|e| e.to_string())?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, out).map_err(|e| err(e.to_string()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(SynthReport {
        path: out.display().to_string(),
        bytes,
        tensors: tensors.len(),
        types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_matches_llama_cpp_q4_k_m_counts_at_3b() {
        // llama.cpp's Q4_K_M of Llama 3.2 3B: 14 of 28 layers get Q6_K attn_v / ffn_down.
        assert_eq!((0..28).filter(|i| more_bits(*i, 28)).count(), 14);
    }

    #[test]
    fn rope_factors_follow_llama3_scaling() {
        let f = llama3_rope_factors(128);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "high frequencies are not scaled");
        assert_eq!(f[63], 32.0, "low frequencies are divided by the factor");
        assert!(f.iter().any(|x| *x > 1.0 && *x < 32.0), "a smooth band");
    }
}
