//! A quantized Llama-architecture decoder read from GGUF, and the families that are Llama's decoder
//! with a few switches (`arch.rs`: Qwen2's Q/K/V biases and NeoX RoPE; Gemma 3's extra norms, GeGLU
//! and sliding-window layers, `gemma.rs`). It follows candle-transformers'
//! `quantized_llama` (same tensors, same kernels) and changes what that module cannot be configured to
//! do, all measured in `novapay bench llm`:
//! - Llama 3.x RoPE frequency scaling (`rope_freqs.weight`) and the GGUF's own context length (candle's
//!   module ignores the first and hard-codes 4096 positions);
//! - weight types whose CPU dot product is a scalar loop in candle (Q4_1, Q5_0, Q5_1) are requantized to
//!   Q8_0 at load, which has a SIMD kernel;
//! - prefill multiplies by weights dequantized one matrix at a time and a dense GEMM, generation uses the
//!   quantized dot product: each phase on its fastest kernel, with no second copy of the weights kept;
//! - the token embedding stays quantized (candle dequantizes it in full: 1.5 GB for Llama 3.2 3B);
//! - on CPUs with AVX-512 VNNI, Q4_K, Q6_K and Q8_0 matrices are repacked once into our kernels' layout
//!   (`packed.rs`) and the GGUF blocks dropped: candle's own VNNI kernels keep a larger second copy
//!   next to the blocks (Llama 3.2 3B Q4_K_M: 4.75 GB instead of ~2.3 GB);
//! - the KV cache is f16, grows in blocks instead of being re-concatenated at every token, and the
//!   position is tracked here, so a wrong `index_pos` cannot silently corrupt the cache; attention
//!   reads it in place (`attention.rs`).
//!
//! # Same prompt, same tokens
//!
//! Greedy text used to depend on the server's history and on the host (issue 25). Both came from
//! prefill kernels whose rounding follows the shape of the batch or the machine:
//! - Dense prefill (the default below 600 MB of weights, SmolLM2) multiplied batches of 16 rows or
//!   more by dequantized f32 weights with the `gemm` crate, and fewer rows (a short tail, decode) by
//!   the quantized kernel: a token's hidden state depended on the batch it was computed in.
//! - Prefill attention was candle's batched matmul and masked softmax over the f32-widened cache.
//!   The softmax sums a row 32 values at a time with AVX2 and the rest one by one. A row of a prefix
//!   run alone is shorter than the same row in the whole prompt (where masked positions add zeros),
//!   so the 32-value blocks end elsewhere and the sum rounds differently. `gemm` also blocks the
//!   reduction depth by the matrix shape: against a cache of 700 positions, a batch of up to 64 rows
//!   sums P·V as 512 + 188, a larger one as 2 x 350. Decode used another kernel (`attention.rs`).
//!   Prompts over 512 tokens ran in chunks.
//!
//!   Measured on SmolLM2 with a 120-token prompt: a prefix + tail split changed up to all 49,152
//!   last-position logits, by up to 0.37, for 1-, 4-, 5-, 60- and 119-token tails. Only 16- and
//!   20-token tails were exact. At 700 tokens the argmax changed. A repeated question ran only its
//!   last 16 tokens (the rest came from the cache), so its first answer token came from other bits
//!   than the first time. Greedy decoding amplifies a last bit into another word.
//! - Across hosts: `gemm`'s f32 kernels here are its AVX2/FMA ones on every x86 host (its AVX-512
//!   kernels are not built without the `x86-v4` feature). It sizes the depth block kc from the L1 data
//!   cache that sysfs reports: 64 x the next power of two of the ways, at least 512, then splits k
//!   evenly (`gemm-common` `cache::kernel_params`). AMD Zen 4 (32 KB, 8-way) gives 512: SmolLM2's
//!   576-wide products sum as 2 x 288 and ffn_down's 1536 as 3 x 512. Intel Sapphire Rapids (48 KB,
//!   12-way) gives 1024: 576 in one block, 1536 as 2 x 768. So every dense prefill row rounded
//!   differently. Measured on the AMD host: with Sapphire Rapids' L1d geometry bind-mounted over
//!   sysfs, the same binary gave other logits at every position (up to 0.02) and, on one of two
//!   prompts, other greedy tokens. Its L2 geometry alone changed nothing, nor did 2 threads instead
//!   of 1.
//!
//! What guarantees it now, on x86 CPUs with AVX-512 F/BW/VNNI where every matrix is in our packed
//! tiles (`split_invariant()`; SmolLM2, Llama 3.2 Q4_K_M):
//! - prefill multiplies by the same packed kernels as decode (`PrefillKernel::Auto`). Activations are
//!   quantized per row, the dot products are exact integers, and each row's blocks are accumulated in
//!   one fixed order by explicit AVX-512 instructions. No width or block comes from cache sizes, so a
//!   row's result does not depend on its batch, the thread count or the host;
//! - prefill attention computes each row with the decode kernel over positions `0..=row`
//!   (`attention::prefill`); each (row, KV head) is run whole by one thread;
//! - the rest works row by row or value by value: embedding rows, RMS norm, RoPE (tables indexed by
//!   absolute position), the f16 cache, residual adds, `silu * up`, the last row's logits.
//!
//! So a token's logits are the same bits whether its prompt ran whole, in chunks, after a reused prefix
//! or one token at a time, on one thread or two. Generation then reuses every cached position but the
//! prompt's last (`Llm::generate`). The tests compare such runs bit for bit (`tests/it/generation.rs`,
//! `synth_llama.rs`). What could still change the bits: another libc (`expf` in SiLU and the RoPE
//! tables' `sinf` / `cosf` come from libm; glibc picks its FMA variants on every AVX-512 host), and
//! `PrefillKernel::Dense`, now an explicit opt-in that keeps the old behaviour. It cost no speed:
//! SmolLM2's prompt rate doubled on the AMD host (int8 VNNI dot products against dequantizing every
//! matrix for an f32 GEMM), generation is the same kernels as before (figures in the branch's report).
//!
//! Elsewhere there is no such guarantee. Without AVX-512 VNNI (or with `packed_weights` off) prefill is
//! dense for small models and candle's quantized kernels otherwise. Those have AVX2, AVX-VNNI and AMX
//! tiers (AMX for Q4_K batches of 32 rows or more). Without AVX-512F, prompt attention is candle's
//! matmuls again. The last 16 prompt tokens are still run again as one batch there. Results differ
//! between those tiers, and on GPUs.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_transformers::quantized_nn::RmsNorm;

use crate::engine::arch::{Architecture, RopeStyle};
use crate::engine::attention;
use crate::engine::kernels::parallel;
use crate::engine::packed::PackedWeight;
use crate::engine::tile_cache::TileCacheMode;
use crate::engine::EngineError;

mod gemma;
mod kv_cache;
mod load;

use gemma::{GemmaLayer, GemmaModel};

use kv_cache::KvCache;

/// What to do with weight types candle multiplies slowly on CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requantize {
    /// Q4_1 / Q5_0 / Q5_1 become Q8_0; everything else is kept.
    Auto,
    /// Keep the file's types.
    Off,
}

impl std::str::FromStr for Requantize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" | "none" => Ok(Self::Off),
            other => Err(format!("unknown requantize mode `{other}` (auto or off)")),
        }
    }
}

/// Which kernel multiplies prompt batches (CPU only; decode always uses the quantized dot product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillKernel {
    /// Quantized wherever our packed kernels hold the weights (AVX-512 VNNI), so a prompt row gets
    /// the bits it gets in decode whatever the batch (the module's note). Without them: dense below
    /// `DENSE_PREFILL_MAX_WEIGHT_BYTES` of weights, quantized above.
    Auto,
    /// Dequantize each matrix to f32 and run a dense GEMM (the `gemm` crate). Not split-invariant: a
    /// row's result depends on the batch it is in, so the same prompt can give other text after a
    /// reused prefix or at another prefill chunk size. Was the fastest prefill of small models.
    Dense,
    /// The quantized kernels (activations quantized per row to Q8, as llama.cpp does): ours where
    /// the weights are packed, candle's otherwise.
    Quantized,
}

impl std::str::FromStr for PrefillKernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "dense" => Ok(Self::Dense),
            "quantized" => Ok(Self::Quantized),
            other => Err(format!(
                "unknown prefill kernel `{other}` (auto, dense or quantized)"
            )),
        }
    }
}

/// Above this many bytes of weights `PrefillKernel::Auto` keeps prefill quantized: dequantizing every
/// matrix per prompt costs more than the f32 GEMM gains (see `novapay bench llm`).
pub const DENSE_PREFILL_MAX_WEIGHT_BYTES: u64 = 600 << 20;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub prefill: PrefillKernel,
    /// Q/K/V and gate/up through one fused quantized kernel call where candle supports it.
    pub fused_matmul: bool,
    pub requantize: Requantize,
    /// Upper bound on the context window; the GGUF's own `context_length` applies when smaller.
    pub max_context: usize,
    /// Rows at or above which a matmul dequantizes its weight and runs a dense GEMM (prefill).
    pub dense_prefill_min_rows: usize,
    /// Q4_K / Q6_K matrices in our AVX-512 VNNI layout (`packed.rs`) where the CPU has it; false keeps
    /// candle's kernels (A/B switch for `bench llm`).
    pub packed_weights: bool,
    /// Keep the repacked tiles in a file that later loads map instead of repacking (`tile_cache.rs`).
    pub tile_cache: TileCacheMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            prefill: PrefillKernel::Auto,
            fused_matmul: true,
            requantize: Requantize::Auto,
            max_context: 4096,
            dense_prefill_min_rows: 16,
            packed_weights: true,
            tile_cache: TileCacheMode::Off,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub weight_types: String,
    /// What the tile cache did at this load: `off`, `mapped <path>`, `written <path>` or
    /// `not written: <why>`.
    pub tile_cache: String,
}

/// Where a quantized matrix lives and which kernels multiply it.
enum Weight {
    /// candle's tensor and kernels: types and shapes `packed.rs` does not cover, or no AVX-512 VNNI.
    Candle {
        weight: Arc<QTensor>,
        quantized: QMatMul,
    },
    /// Repacked for our kernels; the GGUF's blocks are not kept.
    Packed(Arc<PackedWeight>),
}

impl Weight {
    fn candle(weight: Arc<QTensor>) -> candle_core::Result<Self> {
        let quantized = QMatMul::from_arc(weight.clone())?;
        Ok(Self::Candle { weight, quantized })
    }

    fn size_in_bytes(&self) -> usize {
        match self {
            Self::Candle { weight, .. } => weight.storage_size_in_bytes(),
            Self::Packed(p) => p.size_in_bytes(),
        }
    }

    /// Input width (columns).
    fn cols(&self) -> usize {
        match self {
            Self::Candle { weight, .. } => weight.shape().dims().last().copied().unwrap_or(0),
            Self::Packed(p) => p.cols(),
        }
    }

    fn is_quantized(&self) -> bool {
        match self {
            Self::Candle { weight, .. } => !matches!(
                weight.dtype(),
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
            ),
            Self::Packed(_) => true,
        }
    }

    /// The matrix as f32 (rows, cols) on `device`.
    fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Candle { weight, .. } => weight.dequantize(device),
            Self::Packed(p) => Tensor::from_vec(p.dequantize(), (p.rows(), p.cols()), device),
        }
    }
}

/// Runs `f` on the values of a contiguous f32 CPU tensor without copying them.
fn with_cpu_f32<R>(
    x: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = x.storage_and_layout();
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("packed matmul needs a contiguous input".into()))?;
    match &*storage {
        candle_core::Storage::Cpu(cpu) => f(&cpu.as_slice::<f32>()?[start..end]),
        _ => candle_core::bail!("packed matmul runs on the CPU only"),
    }
}

/// Element-wise `f(a, b)` of two same-shape f32 tensors, on the CPU in one pass: one allocation and,
/// for prefill-sized inputs, one rayon section. candle's binary and unary ops hand inputs of 64 Ki
/// values or more to its barrier pool, whose worker spins after every op on a core the next GEMM
/// needs, and `silu(gate) * up` costs candle two passes and two allocations. Other devices and
/// layouts keep candle's ops (`fallback`).
fn elementwise(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
    fallback: impl FnOnce() -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if !(cpu_f32(a) && cpu_f32(b) && a.shape() == b.shape()) {
        return fallback();
    }
    let n = a.elem_count();
    let mut out = vec![0f32; n];
    with_cpu_f32(a, |xs| {
        with_cpu_f32(b, |ys| {
            const CHUNK: usize = 16 * 1024;
            let dst = parallel::SyncPtr(out.as_mut_ptr());
            let run = |chunks: std::ops::Range<usize>| {
                let (start, end) = (chunks.start * CHUNK, n.min(chunks.end * CHUNK));
                // SAFETY: each chunk of `out` is written by exactly one worker.
                let o =
                    unsafe { std::slice::from_raw_parts_mut(dst.get().add(start), end - start) };
                for ((o, x), y) in o.iter_mut().zip(&xs[start..end]).zip(&ys[start..end]) {
                    *o = f(*x, *y);
                }
            };
            if n >= 4 * CHUNK {
                parallel::parallel_for_long(n.div_ceil(CHUNK), run);
            } else {
                run(0..n.div_ceil(CHUNK));
            }
            Ok(())
        })
    })?;
    Tensor::from_vec(out, a.shape(), a.device())
}

/// `silu(gate) * up`, computed as candle's `silu` and `mul` compute it (bit-identical).
fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    elementwise(
        gate,
        up,
        |g, u| g / (1.0 + (-g).exp()) * u,
        || candle_nn::ops::silu(gate)? * up,
    )
}

/// `a + b` (residual connections).
fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    elementwise(a, b, |x, y| x + y, || a + b)
}

/// `x @ W^T` through our kernels for several packed matrices; `x` is (..., cols).
fn packed_matmul(weights: &[&PackedWeight], x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
    let dims = x.dims().to_vec();
    let k = dims.last().copied().unwrap_or(0);
    let rows = x.elem_count() / k.max(1);
    let outs = with_cpu_f32(x, |xs| Ok(PackedWeight::matmul(weights, xs, rows)))?;
    weights
        .iter()
        .zip(outs)
        .map(|(w, out)| {
            let mut out_dims = dims.clone();
            *out_dims.last_mut().expect("x has a last dimension") = w.rows();
            Tensor::from_vec(out, out_dims, x.device())
        })
        .collect()
}

/// A weight matrix kept quantized, multiplied by whichever kernel suits the number of rows, and an
/// optional f32 bias added to each output row (Qwen2's Q/K/V).
struct Linear {
    weight: Weight,
    dense_min_rows: usize,
    bias: Option<Tensor>,
}

impl Linear {
    fn with_bias(self, bias: Tensor) -> Self {
        Self {
            bias: Some(bias),
            ..self
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.matmul(x)?;
        self.add_bias(y)
    }

    /// `y + bias` on every row; each value is one f32 addition, so a row's result does not depend
    /// on the batch it is in.
    fn add_bias(&self, y: Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(b),
        }
    }

    fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.elem_count() / x.dim(D::Minus1)?;
        if rows >= self.dense_min_rows && self.weight.is_quantized() && x.device().is_cpu() {
            let w = self.weight.dequantize(x.device())?;
            let mut out_dims = x.dims().to_vec();
            let k = out_dims.pop().unwrap_or(0);
            out_dims.push(w.dim(0)?);
            let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
            return y.reshape(out_dims);
        }
        match &self.weight {
            Weight::Candle { quantized, .. } => quantized.forward(x),
            Weight::Packed(p) => {
                let x = x.contiguous()?;
                Ok(packed_matmul(&[p], &x)?.remove(0))
            }
        }
    }

    /// True when this input goes through a quantized kernel (not the dense prefill).
    fn quantized_for(&self, x: &Tensor) -> candle_core::Result<bool> {
        let rows = x.elem_count() / x.dim(D::Minus1)?;
        Ok(self.weight.is_quantized() && !(rows >= self.dense_min_rows && x.device().is_cpu()))
    }

    /// Several matrices applied to the same input (Q/K/V, gate/up): the activation is quantized once
    /// and one parallel section covers all of them, with our kernels (any mix of Q4_K / Q6_K) or
    /// candle's fused call (same-type matrices, AVX-512 VNNI). One call per matrix otherwise.
    fn forward_shared(
        linears: &[&Linear],
        x: &Tensor,
        fused: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        if fused && x.device().is_cpu() && x.is_contiguous() {
            let mut all_quantized = true;
            for l in linears {
                all_quantized &= l.quantized_for(x)?;
            }
            let packed: Vec<&PackedWeight> = linears
                .iter()
                .filter_map(|l| match &l.weight {
                    Weight::Packed(p) => Some(p.as_ref()),
                    Weight::Candle { .. } => None,
                })
                .collect();
            if all_quantized && packed.len() == linears.len() {
                return with_biases(linears, packed_matmul(&packed, x)?);
            }
            let candle: Vec<&QTensor> = linears
                .iter()
                .filter_map(|l| match &l.weight {
                    Weight::Candle { weight, .. } => Some(weight.as_ref()),
                    Weight::Packed(_) => None,
                })
                .collect();
            let same_type = candle.len() == linears.len()
                && candle.iter().all(|w| w.dtype() == candle[0].dtype());
            if all_quantized && same_type {
                if let Some(out) = QTensor::gemv_fused_shared_lhs(&candle, x)? {
                    return with_biases(linears, out);
                }
            }
        }
        linears.iter().map(|l| l.forward(x)).collect()
    }
}

fn with_biases(linears: &[&Linear], outs: Vec<Tensor>) -> candle_core::Result<Vec<Tensor>> {
    linears
        .iter()
        .zip(outs)
        .map(|(l, y)| l.add_bias(y))
        .collect()
}

/// The token embedding, kept quantized: only the looked-up rows are dequantized.
enum Embedding {
    Candle(Arc<QTensor>),
    Packed(Arc<PackedWeight>),
}

impl Embedding {
    /// Rows of `ids` as (1, ids, hidden).
    fn lookup(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Candle(t) => t.embedding(&Tensor::new(ids, device)?.unsqueeze(0)?),
            Self::Packed(p) => {
                let hidden = p.cols();
                let mut out = vec![0f32; ids.len() * hidden];
                for (row, id) in out.chunks_mut(hidden).zip(ids) {
                    let id = *id as usize;
                    if id >= p.rows() {
                        candle_core::bail!(
                            "token id {id} is outside the {}-row embedding",
                            p.rows()
                        );
                    }
                    p.dequantize_row(id, row);
                }
                Tensor::from_vec(out, (1, ids.len(), hidden), device)
            }
        }
    }

    fn rows(&self) -> usize {
        match self {
            Self::Candle(t) => t.shape().dims().first().copied().unwrap_or(0),
            Self::Packed(p) => p.rows(),
        }
    }

    fn size_in_bytes(&self) -> usize {
        match self {
            Self::Candle(t) => t.storage_size_in_bytes(),
            Self::Packed(p) => p.size_in_bytes(),
        }
    }

    /// The same matrix as an output head (tied embeddings).
    fn as_weight(&self) -> candle_core::Result<Weight> {
        match self {
            Self::Candle(t) => Weight::candle(t.clone()),
            Self::Packed(p) => Ok(Weight::Packed(p.clone())),
        }
    }
}

struct Layer {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    /// Gemma 3's norms and attention span; `None` for Llama and Qwen2.
    gemma: Option<GemmaLayer>,
}

/// One sequence's state, kept apart from the weights: the f16 keys and values of every layer and
/// the position the next token takes. A model serves any number of them (`LlamaModel::forward_batch`
/// advances several in one pass); each conversation keeps its own, so a follow-up reuses its prefix.
pub struct KvState {
    layers: Vec<KvCache>,
    pos: usize,
}

impl KvState {
    /// Positions held.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Keeps only the first `len` positions; the next forward pass continues from there (the buffers
    /// are kept and overwritten).
    pub fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
        for kv in &mut self.layers {
            kv.truncate(self.pos);
        }
    }

    /// Forgets every position and frees the buffers.
    pub fn reset(&mut self) {
        self.pos = 0;
        for kv in &mut self.layers {
            kv.reset();
        }
    }

    /// Bytes the buffers take (allocated capacity, not only the positions in use).
    pub fn allocated_bytes(&self) -> usize {
        self.layers.iter().map(KvCache::allocated_bytes).sum()
    }
}

pub struct LlamaModel {
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    neg_inf: Tensor,
    device: Device,
    /// Use candle's fused multi-matrix quantized kernel where it applies.
    fused: bool,
    /// Every token's logits are the same bits however the prompt is split into forward passes
    /// (`split_invariant`).
    split_invariant: bool,
    rope_style: RopeStyle,
    /// Gemma 3's embedding scale, local RoPE tables, query scale and logit softcap.
    gemma: Option<GemmaModel>,
    pub config: LlamaConfig,
}

impl LlamaModel {
    /// Bytes of weights one decode step reads: every matrix once, plus one embedding row. This over
    /// the measured memory bandwidth is the fastest generation can possibly be.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let linear = |l: &Linear| l.weight.size_in_bytes() as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .into_iter()
                    .map(linear)
                    .sum::<u64>()
            })
            .sum();
        let embedding_row =
            self.embedding.size_in_bytes() as u64 / self.embedding.rows().max(1) as u64;
        layers + linear(&self.output) + embedding_row
    }

    /// Every matrix product of one decode step, grouped as `forward` groups them, on a constant input
    /// and without the other ops: what the kernels and their parallel sections alone cost per token
    /// (`bench llm` reports it next to the whole step).
    pub fn matvec_step(&self) -> candle_core::Result<()> {
        let ones = |n: usize| Tensor::ones((1, 1, n), DType::F32, &self.device);
        let h = ones(self.config.hidden)?;
        for l in &self.layers {
            Linear::forward_shared(&[&l.wq, &l.wk, &l.wv], &h, self.fused)?;
            l.wo.forward(&ones(l.wo.weight.cols())?)?;
            Linear::forward_shared(&[&l.w_gate, &l.w_up], &h, self.fused)?;
            l.w_down.forward(&ones(l.w_down.weight.cols())?)?;
        }
        self.output.forward(&h)?;
        Ok(())
    }

    /// True when a token's logits do not depend on how the tokens before it were split into forward
    /// passes (a reused prefix, prefill chunks, decode) nor on the thread count: CPU, every matrix in
    /// our packed kernels, quantized prefill (the module's note). Generation then reuses every cached
    /// position it can.
    pub fn split_invariant(&self) -> bool {
        self.split_invariant
    }

    /// An empty sequence for this model (no position yet, no memory until its first forward).
    pub fn new_state(&self) -> KvState {
        KvState {
            layers: (0..self.layers.len()).map(|_| KvCache::new()).collect(),
            pos: 0,
        }
    }

    /// Bytes of f16 keys and values one position takes in every layer.
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.config;
        c.n_layer * c.n_kv_head * c.head_dim * 2 * 2
    }

    /// Runs `tokens` after what `kv` holds; returns the logits of the last token, as f32.
    pub fn forward(&self, kv: &mut KvState, tokens: &[u32]) -> Result<Tensor, EngineError> {
        let seq_len = tokens.len();
        self.check_room(kv, seq_len)?;
        let logits = self
            .forward_inner(kv, tokens, false)
            .map_err(EngineError::from)?;
        kv.pos += seq_len;
        Ok(logits)
    }

    /// Like `forward`, but returns the logits of every position, shape (tokens, vocab) (debugging and
    /// parity checks; generation only needs the last row).
    pub fn forward_all(&self, kv: &mut KvState, tokens: &[u32]) -> Result<Tensor, EngineError> {
        self.check_room(kv, tokens.len())?;
        let logits = self
            .forward_inner(kv, tokens, true)
            .map_err(EngineError::from)?;
        kv.pos += tokens.len();
        Ok(logits)
    }

    /// One forward pass of several sequences: `tokens[i]` runs after what `seqs[i]` holds (one
    /// token for a decode step, several for a piece of a prompt). The matrices see all the rows as
    /// one batch, so each weight tile is read once for all of them (the packed kernels multiply row
    /// by row, so each row gets the bits it gets alone: `split_invariant`); RoPE takes each row's
    /// own position and attention reads each sequence's own cache. Returns the logits of each
    /// sequence's last token, (sequences, vocab). Nothing is changed when it fails. A sequence of
    /// several tokens needs `mixed_batches`.
    pub fn forward_batch(
        &self,
        seqs: &mut [&mut KvState],
        tokens: &[&[u32]],
    ) -> Result<Tensor, EngineError> {
        if seqs.len() != tokens.len() || seqs.is_empty() {
            return Err(EngineError::Internal(format!(
                "{} token lists for {} sequences",
                tokens.len(),
                seqs.len()
            )));
        }
        for (kv, t) in seqs.iter().zip(tokens) {
            self.check_room(kv, t.len())?;
            if t.len() > 1 && !self.mixed_batches() {
                return Err(EngineError::Internal(
                    "prompt rows in a batch need the CPU attention kernels".into(),
                ));
            }
        }
        let lens: Vec<usize> = seqs.iter().map(|kv| kv.pos).collect();
        let logits = self.forward_batch_inner(seqs, tokens).map_err(|e| {
            // A failure half-way through the layers may have appended to some caches.
            for (kv, len) in seqs.iter_mut().zip(&lens) {
                kv.truncate(*len);
            }
            EngineError::from(e)
        })?;
        for (kv, t) in seqs.iter_mut().zip(tokens) {
            kv.pos += t.len();
        }
        Ok(logits)
    }

    /// True when `forward_batch` takes prompt pieces next to decode tokens (CPU attention kernels).
    pub fn mixed_batches(&self) -> bool {
        self.device.is_cpu() && attention::vectorized()
    }

    fn check_room(&self, kv: &KvState, seq_len: usize) -> Result<(), EngineError> {
        if seq_len == 0 {
            return Err(EngineError::InvalidInput("no tokens to run".into()));
        }
        if kv.pos + seq_len > self.config.context_length {
            return Err(EngineError::ContextOverflow {
                tokens: kv.pos + seq_len,
                limit: self.config.context_length,
            });
        }
        Ok(())
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        match self.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
            RopeStyle::Neox => candle_nn::rotary_emb::rope(x, cos, sin),
        }
    }

    /// `forward_batch` without the bookkeeping. The rows are laid out as one prompt (1, rows,
    /// hidden), so every matrix product is the prompt path's.
    fn forward_batch_inner(
        &self,
        seqs: &mut [&mut KvState],
        tokens: &[&[u32]],
    ) -> candle_core::Result<Tensor> {
        let all: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        let rows = all.len();
        let mut positions = Vec::with_capacity(rows);
        let mut last_rows = Vec::with_capacity(tokens.len());
        for (kv, t) in seqs.iter().zip(tokens) {
            positions.extend((0..t.len()).map(|j| (kv.pos + j) as u32));
            last_rows.push((positions.len() - 1) as u32);
        }
        let positions = Tensor::new(positions.as_slice(), &self.device)?;
        let cos = self.cos.index_select(&positions, 0)?;
        let sin = self.sin.index_select(&positions, 0)?;
        let mut x = self.embedding.lookup(&all, &self.device)?;
        let mut local_rope = None;
        if let Some(g) = &self.gemma {
            x = gemma::scale(&x, g.embed_scale)?;
            local_rope = Some((
                g.local_cos.index_select(&positions, 0)?,
                g.local_sin.index_select(&positions, 0)?,
            ));
        }
        let (n_head, n_kv_head, head_dim) = (
            self.config.n_head,
            self.config.n_kv_head,
            self.config.head_dim,
        );
        for (l, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let mut qkv =
                Linear::forward_shared(&[&layer.wq, &layer.wk, &layer.wv], &h, self.fused)?;
            let v = qkv.pop().expect("three outputs");
            let k = qkv.pop().expect("three outputs");
            let q = qkv.pop().expect("three outputs");
            // (1, heads, rows, hd): RoPE's "time" axis is the row, each with its own position.
            // Gemma 3 normalises each query and key head first.
            let heads =
                |t: Tensor, n: usize, norm: Option<&RmsNorm>| -> candle_core::Result<Tensor> {
                    let t = t.reshape((1, rows, n, head_dim))?;
                    let t = match norm {
                        Some(norm) => gemma::per_head_norm(norm, &t)?,
                        None => t,
                    };
                    t.transpose(1, 2)?.contiguous()
                };
            let window = layer.gemma.as_ref().and_then(|g| g.window);
            let (cos, sin) = match (&local_rope, window) {
                (Some((c, s)), Some(_)) => (c, s),
                _ => (&cos, &sin),
            };
            let q_norm = layer.gemma.as_ref().map(|g| &g.q_norm);
            let k_norm = layer.gemma.as_ref().map(|g| &g.k_norm);
            let mut q = self.rope(&heads(q, n_head, q_norm)?, cos, sin)?;
            let k = self.rope(&heads(k, n_kv_head, k_norm)?, cos, sin)?;
            if let Some(f) = self.gemma.as_ref().and_then(|g| g.query_factor) {
                q = (q * f)?;
            }
            let v = heads(v, n_kv_head, None)?;
            let mut ys = Vec::with_capacity(tokens.len());
            let mut at = 0;
            for (kv, t) in seqs.iter_mut().zip(tokens) {
                let n = t.len();
                let cache = &mut kv.layers[l];
                cache.append(&k.narrow(2, at, n)?, &v.narrow(2, at, n)?)?;
                ys.push(self.attend_rows(cache, &q.narrow(2, at, n)?, n, window)?);
                at += n;
            }
            let y = Tensor::cat(&ys, 1)?;
            x = self.after_attention(layer, &y, residual)?;
        }
        let last = Tensor::new(last_rows.as_slice(), &self.device)?;
        let x = x.squeeze(0)?.index_select(&last, 0)?.unsqueeze(0)?;
        let x = self.norm.forward(&x)?;
        let logits = self.output.forward(&x)?.squeeze(0)?;
        let logits = match self.gemma.as_ref().and_then(|g| g.final_softcap) {
            Some(cap) => gemma::softcap(&logits, cap)?,
            None => logits,
        };
        logits.to_dtype(DType::F32)
    }

    /// The rest of a layer once attention has run (the single-sequence and the batched pass share
    /// it): the output projection (and Gemma 3's post-attention norm) added to `residual`, then the
    /// feed-forward block (SwiGLU, or Gemma 3's GeGLU and post-FFN norm) added on top.
    fn after_attention(
        &self,
        layer: &Layer,
        attention: &Tensor,
        residual: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let mut y = layer.wo.forward(attention)?;
        if let Some(g) = &layer.gemma {
            y = g.post_attn_norm.forward(&y)?;
        }
        let x1 = add(&y, residual)?;
        let h = layer.ffn_norm.forward(&x1)?;
        let mut gate_up = Linear::forward_shared(&[&layer.w_gate, &layer.w_up], &h, self.fused)?;
        let up = gate_up.pop().expect("two outputs");
        let gate = gate_up.pop().expect("two outputs");
        let y = match &layer.gemma {
            None => layer.w_down.forward(&silu_mul(&gate, &up)?)?,
            Some(g) => {
                let y = layer.w_down.forward(&gemma::gelu_mul(&gate, &up)?)?;
                g.post_ffn_norm.forward(&y)?
            }
        };
        add(&y, &x1)
    }

    /// Attention of the `rows` newest tokens of `cache` (appended already), queries `q` (1, n_head,
    /// rows, hd), as `forward_inner` computes them; returns (1, rows, n_head * hd).
    fn attend_rows(
        &self,
        cache: &KvCache,
        q: &Tensor,
        rows: usize,
        window: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        if rows == 1 {
            return self.attend_decode(cache, &q.contiguous()?, window);
        }
        let (n_head, head_dim) = (self.config.n_head, self.config.head_dim);
        let q = q.transpose(1, 2)?.contiguous()?;
        let out = cache.attend_cpu(&q, rows, n_head, head_dim, window)?;
        Tensor::from_vec(out, (1, rows, n_head * head_dim), &self.device)
    }

    /// Attention of one new token `q` (1, n_head, 1, hd) over `cache` (which holds it already), as
    /// `forward_inner` computes a decode step; returns (1, 1, n_head * hd).
    fn attend_decode(
        &self,
        cache: &KvCache,
        q: &Tensor,
        window: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let (n_head, n_kv_head, head_dim) = (
            self.config.n_head,
            self.config.n_kv_head,
            self.config.head_dim,
        );
        if self.device.is_cpu() {
            let out = cache.attend_cpu(q, 1, n_head, head_dim, window)?;
            return Tensor::from_vec(out, (1, 1, n_head * head_dim), &self.device);
        }
        let scale = 1.0 / (head_dim as f64).sqrt();
        let (k, v) = cache.all_f32()?;
        let (k, v) = (
            gemma::last_positions(&k, window)?,
            gemma::last_positions(&v, window)?,
        );
        let q = q.reshape((1, n_kv_head, n_head / n_kv_head, head_dim))?;
        let att = (q.matmul(&k.t()?)? * scale)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        att.matmul(&v.contiguous()?)?
            .reshape((1, 1, n_head * head_dim))
    }

    fn forward_inner(
        &self,
        kv: &mut KvState,
        tokens: &[u32],
        all_positions: bool,
    ) -> candle_core::Result<Tensor> {
        let seq_len = tokens.len();
        let index_pos = kv.pos;
        let cpu = self.device.is_cpu();
        let mask = if seq_len > 1 && !(cpu && attention::vectorized()) {
            Some(candle_transformers::utils::build_causal_mask(
                seq_len,
                index_pos,
                &self.device,
            )?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, index_pos, seq_len)?;
        let sin = self.sin.narrow(0, index_pos, seq_len)?;
        let mut x = self.embedding.lookup(tokens, &self.device)?;
        let mut local_rope = None;
        if let Some(g) = &self.gemma {
            x = gemma::scale(&x, g.embed_scale)?;
            local_rope = Some((
                g.local_cos.narrow(0, index_pos, seq_len)?,
                g.local_sin.narrow(0, index_pos, seq_len)?,
            ));
        }
        let (n_head, n_kv_head, head_dim) = (
            self.config.n_head,
            self.config.n_kv_head,
            self.config.head_dim,
        );
        for (layer, cache) in self.layers.iter().zip(kv.layers.iter_mut()) {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let (b, s, _) = h.dims3()?;
            let width = n_head * head_dim;
            let mut qkv =
                Linear::forward_shared(&[&layer.wq, &layer.wk, &layer.wv], &h, self.fused)?;
            let v = qkv.pop().expect("three outputs");
            let k = qkv.pop().expect("three outputs");
            let q = qkv.pop().expect("three outputs");
            let mut q = q.reshape((b, s, n_head, head_dim))?;
            let mut k = k.reshape((b, s, n_kv_head, head_dim))?;
            if let Some(g) = &layer.gemma {
                q = gemma::per_head_norm(&g.q_norm, &q)?;
                k = gemma::per_head_norm(&g.k_norm, &k)?;
            }
            let q = q.transpose(1, 2)?.contiguous()?;
            let k = k.transpose(1, 2)?.contiguous()?;
            let v = v
                .reshape((b, s, n_kv_head, head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let rope = match self.rope_style {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i,
                RopeStyle::Neox => candle_nn::rotary_emb::rope,
            };
            let window = layer.gemma.as_ref().and_then(|g| g.window);
            let (cos, sin) = match (&local_rope, window) {
                (Some((c, s)), Some(_)) => (c, s),
                _ => (&cos, &sin),
            };
            let mut q = rope(&q, cos, sin)?;
            let k = rope(&k, cos, sin)?;
            if let Some(f) = self.gemma.as_ref().and_then(|g| g.query_factor) {
                q = (q * f)?;
            }
            cache.append(&k, &v)?;
            let scale = 1.0 / (head_dim as f64).sqrt();
            let y = if cpu && (s == 1 || attention::vectorized()) {
                // Our kernel over the f16 cache in place (`attention.rs`), every prompt row as the
                // decode step of that token: (b, heads, s, hd) -> (b, s, heads, hd) rows.
                let q = if s == 1 { q } else { q.transpose(1, 2)? };
                let out = cache.attend_cpu(&q.contiguous()?, b * s, n_head, head_dim, window)?;
                Tensor::from_vec(out, (b, s, width), &self.device)?
            } else if s == 1 {
                // Decode elsewhere: the query heads that share a KV head attend as one group, so the
                // cache is read in place instead of being copied n_head/n_kv_head times (repeat_kv).
                let (k, v) = cache.all_f32()?;
                let (k, v) = (
                    gemma::last_positions(&k, window)?,
                    gemma::last_positions(&v, window)?,
                );
                let n_rep = n_head / n_kv_head;
                let q = q.reshape((b, n_kv_head, n_rep, head_dim))?;
                let att = (q.matmul(&k.t()?)? * scale)?;
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                att.matmul(&v.contiguous()?)?.reshape((b, s, width))?
            } else {
                let (k, v) = cache.all_f32()?;
                let k = candle_transformers::utils::repeat_kv(k, n_head / n_kv_head)?;
                let v = candle_transformers::utils::repeat_kv(v, n_head / n_kv_head)?;
                let att = (q.matmul(&k.t()?)? * scale)?;
                let window_mask = match window {
                    Some(w) => Some(gemma::sliding_window_mask(s, index_pos, w, &self.device)?),
                    None => None,
                };
                let att = match window_mask.as_ref().or(mask.as_ref()) {
                    None => att,
                    Some(mask) => {
                        let mask = mask.broadcast_as(att.shape())?;
                        mask.where_cond(&self.neg_inf.broadcast_as(att.shape())?, &att)?
                    }
                };
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                let y = att.matmul(&v.contiguous()?)?;
                y.transpose(1, 2)?.reshape((b, s, width))?
            };
            x = self.after_attention(layer, &y, residual)?;
        }
        let x = self.norm.forward(&x)?;
        let logits = if all_positions {
            self.output.forward(&x)?.squeeze(0)?
        } else {
            let last = x.i((.., seq_len - 1, ..))?;
            self.output.forward(&last)?.squeeze(0)?
        };
        let logits = match self.gemma.as_ref().and_then(|g| g.final_softcap) {
            Some(cap) => gemma::softcap(&logits, cap)?,
            None => logits,
        };
        logits.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::engine::test_values(n, seed, 16.0)
    }

    #[test]
    fn fused_elementwise_ops_are_bit_identical_to_candles() {
        let dev = Device::Cpu;
        // Decode-sized (one pass) and prefill-sized (parallel chunks, a partial last one).
        for n in [8192, 5 * 16 * 1024 + 77] {
            let a = Tensor::from_vec(values(n, 1), (1, 1, n), &dev).unwrap();
            let b = Tensor::from_vec(values(n, 2), (1, 1, n), &dev).unwrap();
            let want = (candle_nn::ops::silu(&a).unwrap() * &b).unwrap();
            let got = silu_mul(&a, &b).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            let want = (&a + &b).unwrap().flatten_all().unwrap();
            let got = add(&a, &b).unwrap().flatten_all().unwrap();
            assert_eq!(
                got.to_vec1::<f32>().unwrap(),
                want.to_vec1::<f32>().unwrap()
            );
        }
        // A layout the fused path does not take falls back to candle's ops.
        let a = Tensor::from_vec(values(64, 3), (8, 8), &dev).unwrap();
        let t = a.t().unwrap();
        let got = add(&t, &t).unwrap().to_vec2::<f32>().unwrap();
        let want = (&t + &t).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, want);
    }
}
