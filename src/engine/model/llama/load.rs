//! `LlamaModel::load`: from an open GGUF of any supported architecture (`arch.rs`) to a model ready to
//! run, in named steps (metadata, shape checks, the kernels' plan, the tile cache, the tensors, the
//! cache written back).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use super::gemma::{GemmaLayer, GemmaModel};
use super::{
    Embedding, Layer, Linear, LlamaConfig, LlamaModel, LoadOptions, PrefillKernel, Requantize,
    Weight, DENSE_PREFILL_MAX_WEIGHT_BYTES,
};
use crate::engine::arch::Architecture;
use crate::engine::gguf::GgufFile;
use crate::engine::load_phases::LoadPhases;
use crate::engine::packed::{self, PackedWeight};
use crate::engine::tile_cache::{self, Fingerprint, TileCache};
use crate::engine::EngineError;

impl LlamaModel {
    /// Reads the weights of `gguf` (the header is only read, so the tokenizer can be built from it on
    /// another thread meanwhile).
    pub fn load(gguf: &GgufFile, device: &Device, opts: &LoadOptions) -> Result<Self, EngineError> {
        let mut phases = LoadPhases::start("weights");
        let meta = Metadata::read(gguf, opts)?;
        // Every shape is checked against the metadata before any weight is read: a bad file fails at
        // once, naming the tensor, instead of half-loading or failing inside a matmul later.
        check_tensor_shapes(gguf, &meta.expected_shapes())?;
        let plan = KernelPlan::choose(gguf, device, opts);
        let cache = TileCacheUse::open(gguf, &plan, opts);
        phases.phase("tile cache lookup");
        let mut reader = reopen(gguf)?;
        let mut r = TensorReader {
            keep_for_cache: cache.fingerprint.is_some(),
            cache: cache.mapped,
            all_packed: Vec::new(),
            repacked_now: 0,
            dense_min_rows: plan.dense_min_rows,
            content: &gguf.content,
            reader: &mut reader,
            device,
            path: &gguf.path,
            opts,
            types: Default::default(),
        };
        let (cos, sin) = read_rope_tables(&mut r, &meta, device)?;
        let gemma = match &meta.gemma {
            Some(g) => Some(gemma_model(g, &meta, device).map_err(|e| bad(gguf, e.to_string()))?),
            None => None,
        };
        phases.phase("shape checks, rope tables");
        let embedding = read_embedding(&mut r)?;
        phases.phase("token embedding");
        let norm = r.norm("output_norm.weight", meta.eps)?;
        let output = read_output(&mut r, &embedding)?;
        let layers = read_layers(&mut r, &meta)?;
        phases.phase("layers");
        let tile_cache_use =
            write_tile_cache(&r, &cache.paths, cache.fingerprint.as_ref(), &mut phases);
        phases.done();
        let weight_types = r
            .types
            .iter()
            .map(|(k, v)| format!("{k}x{v}"))
            .collect::<Vec<_>>()
            .join(",");
        let neg_inf =
            Tensor::new(f32::NEG_INFINITY, device).map_err(|e| bad(gguf, e.to_string()))?;
        let all_packed = std::iter::once(&output)
            .chain(
                layers
                    .iter()
                    .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]),
            )
            .all(|l| matches!(l.weight, Weight::Packed(_)));
        let split_invariant = device.is_cpu() && !plan.dense_prefill && all_packed;
        let vocab = embedding.rows();
        Ok(Self {
            embedding,
            layers,
            norm,
            output,
            cos,
            sin,
            neg_inf,
            device: device.clone(),
            fused: opts.fused_matmul,
            split_invariant,
            rope_style: meta.arch.rope_style(),
            gemma,
            config: LlamaConfig {
                architecture: meta.arch,
                n_layer: meta.n_layer,
                n_head: meta.n_head,
                n_kv_head: meta.n_kv_head,
                head_dim: meta.head_dim,
                hidden: meta.hidden,
                vocab,
                context_length: meta.context_length,
                weight_types,
                tile_cache: tile_cache_use,
            },
        })
    }
}

fn bad(gguf: &GgufFile, reason: String) -> EngineError {
    EngineError::BadModel {
        path: gguf.path.clone(),
        reason,
    }
}

/// The model's hyperparameters from the GGUF's metadata (keys under the architecture's prefix), checked
/// for consistency.
struct Metadata {
    arch: Architecture,
    n_head: usize,
    n_kv_head: usize,
    n_layer: usize,
    hidden: usize,
    head_dim: usize,
    rope_dim: usize,
    eps: f64,
    freq_base: f32,
    context_length: usize,
    /// Gemma 3's settings (`None` for the other families).
    gemma: Option<GemmaMeta>,
}

/// Gemma 3's hyperparameters, as llama.cpp reads them.
struct GemmaMeta {
    /// `gemma3.attention.sliding_window`: positions a local layer sees (its own included).
    sliding_window: usize,
    /// Every `pattern`-th layer (the last of each group) is global, the others local; llama.cpp fixes
    /// it at 6 for Gemma 3 (`attention.sliding_window_pattern` is read when a file states it).
    pattern: usize,
    /// Global layers' RoPE positions are multiplied by this (`rope.scaling.factor` 8 on 4B and up).
    global_freq_scale: f32,
    /// Attention scale: 1/sqrt(key_length), except the 62-layer 27B: 1/sqrt(hidden / heads).
    attention_scale: f64,
    final_softcap: Option<f32>,
}

/// RoPE base of Gemma 3's local layers (llama.cpp's `rope_freq_base_train_swa`).
const GEMMA3_LOCAL_ROPE_BASE: f32 = 10_000.0;
/// llama.cpp's Gemma 3 sliding-window pattern.
const GEMMA3_SWA_PATTERN: usize = 6;

impl GemmaMeta {
    fn read(gguf: &GgufFile, meta: &Metadata) -> Result<Self, EngineError> {
        let key = |k: &str| meta.arch.key(k);
        let sliding_window = gguf.require_u32(&key("attention.sliding_window"))? as usize;
        let pattern = gguf
            .get_u32(&key("attention.sliding_window_pattern"))
            .map(|v| v as usize)
            .unwrap_or(GEMMA3_SWA_PATTERN);
        if sliding_window == 0 || pattern == 0 {
            return Err(bad(
                gguf,
                format!("sliding window {sliding_window} / pattern {pattern} must be positive"),
            ));
        }
        let factor = gguf
            .get_f32(&key("rope.scaling.factor"))
            .filter(|f| *f > 0.0)
            .unwrap_or(1.0);
        let attention_scale = if meta.n_layer == 62 {
            1.0 / ((meta.hidden / meta.n_head) as f64).sqrt()
        } else {
            1.0 / (meta.head_dim as f64).sqrt()
        };
        Ok(Self {
            sliding_window,
            pattern,
            global_freq_scale: 1.0 / factor,
            attention_scale,
            final_softcap: gguf
                .get_f32(&key("final_logit_softcapping"))
                .filter(|c| *c > 0.0),
        })
    }

    /// The window of layer `i`, `None` for a global layer (llama.cpp's `set_swa_pattern`).
    fn window(&self, i: usize) -> Option<usize> {
        (i % self.pattern < self.pattern - 1).then_some(self.sliding_window)
    }
}

/// The model-wide Gemma 3 settings: embedding scale, the local layers' RoPE tables, query scale.
fn gemma_model(g: &GemmaMeta, meta: &Metadata, device: &Device) -> candle_core::Result<GemmaModel> {
    let (local_cos, local_sin) = rope_tables(
        meta.rope_dim,
        GEMMA3_LOCAL_ROPE_BASE,
        None,
        1.0,
        meta.context_length,
        device,
    )?;
    let kernel_scale = 1.0 / (meta.head_dim as f64).sqrt();
    let factor = g.attention_scale / kernel_scale;
    Ok(GemmaModel {
        embed_scale: (meta.hidden as f32).sqrt(),
        local_cos,
        local_sin,
        query_factor: ((factor - 1.0).abs() > 1e-12).then_some(factor),
        final_softcap: g.final_softcap,
    })
}

impl Metadata {
    fn read(gguf: &GgufFile, opts: &LoadOptions) -> Result<Self, EngineError> {
        let arch = Architecture::of(gguf)?;
        let key = |k: &str| arch.key(k);
        let n_head = gguf.require_u32(&key("attention.head_count"))? as usize;
        let n_kv_head = gguf
            .get_u32(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_head);
        let n_layer = gguf.require_u32(&key("block_count"))? as usize;
        let hidden = gguf.require_u32(&key("embedding_length"))? as usize;
        let explicit_head_dim = gguf.get_u32(&key("attention.key_length")).is_some();
        if n_head == 0
            || n_kv_head == 0
            || !(explicit_head_dim || hidden.is_multiple_of(n_head))
            || !n_head.is_multiple_of(n_kv_head)
        {
            return Err(bad(
                gguf,
                format!(
                    "inconsistent attention metadata: {hidden} hidden, {n_head} heads, {n_kv_head} KV \
                     heads (heads must divide the hidden size and KV heads the heads)"
                ),
            ));
        }
        // Gemma's heads are not hidden / heads wide (Gemma 3 4B: 8 heads of 256 on 2560): the file
        // states `attention.key_length`, and values must be as wide.
        let head_dim = gguf
            .get_u32(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden / n_head);
        let value_dim = gguf
            .get_u32(&key("attention.value_length"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if head_dim == 0 || value_dim != head_dim {
            return Err(bad(
                gguf,
                format!("key length {head_dim} and value length {value_dim} must be equal"),
            ));
        }
        let rope_dim = gguf
            .get_u32(&key("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        if rope_dim == 0 || rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(bad(
                gguf,
                format!("RoPE dimension {rope_dim} does not fit a head of {head_dim}"),
            ));
        }
        if rope_dim != head_dim {
            // Partial RoPE (a rotated prefix of each head) is not implemented: say so rather than
            // rotate the wrong dimensions.
            return Err(bad(
                gguf,
                format!("partial RoPE ({rope_dim} of {head_dim} head dimensions) is not supported"),
            ));
        }
        let eps = gguf
            .get_f32(&key("attention.layer_norm_rms_epsilon"))
            .unwrap_or(arch.default_rms_eps()) as f64;
        let freq_base = gguf
            .get_f32(&key("rope.freq_base"))
            .unwrap_or(arch.default_freq_base());
        let trained_context = gguf
            .get_u32(&key("context_length"))
            .map(|v| v as usize)
            .unwrap_or(opts.max_context);
        let context_length = trained_context.min(opts.max_context).max(1);
        let mut meta = Self {
            arch,
            n_head,
            n_kv_head,
            n_layer,
            hidden,
            head_dim,
            rope_dim,
            eps,
            freq_base,
            context_length,
            gemma: None,
        };
        if arch.gemma() {
            meta.gemma = Some(GemmaMeta::read(gguf, &meta)?);
        }
        Ok(meta)
    }

    fn expected_shapes(&self) -> ExpectedShapes {
        ExpectedShapes {
            n_layer: self.n_layer,
            hidden: self.hidden,
            q_dim: self.n_head * self.head_dim,
            kv_dim: self.n_kv_head * self.head_dim,
            rope_dim: self.rope_dim,
            qkv_bias: self.arch.qkv_bias(),
            rope_freq_factors: self.arch.rope_freq_factors(),
            head_dim: self.head_dim,
            gemma_norms: self.arch.gemma(),
        }
    }
}

/// Which kernels the weights are loaded for: packed int8 tiles (AVX-512 VNNI) and/or dense f32
/// prompt matmuls.
struct KernelPlan {
    packing: bool,
    dense_prefill: bool,
    /// Rows from which a matmul takes the dense f32 path (`usize::MAX`: never).
    dense_min_rows: usize,
}

impl KernelPlan {
    fn choose(gguf: &GgufFile, device: &Device, opts: &LoadOptions) -> Self {
        let weight_bytes: u64 = gguf
            .content
            .tensor_infos
            .values()
            .map(|t| {
                (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64
            })
            .sum();
        let packing = opts.packed_weights && device.is_cpu() && packed::available();
        let dense_prefill = device.is_cpu()
            && match opts.prefill {
                PrefillKernel::Dense => true,
                PrefillKernel::Quantized => false,
                PrefillKernel::Auto => !packing && weight_bytes <= DENSE_PREFILL_MAX_WEIGHT_BYTES,
            };
        let dense_min_rows = if dense_prefill {
            opts.dense_prefill_min_rows
        } else {
            usize::MAX
        };
        Self {
            packing,
            dense_prefill,
            dense_min_rows,
        }
    }
}

/// Where the tile cache may live, the GGUF's fingerprint, and the cache of an earlier load when one
/// matches.
struct TileCacheUse {
    paths: Vec<std::path::PathBuf>,
    fingerprint: Option<Fingerprint>,
    mapped: Option<TileCache>,
}

impl TileCacheUse {
    fn open(gguf: &GgufFile, plan: &KernelPlan, opts: &LoadOptions) -> Self {
        let paths = if plan.packing {
            tile_cache::locate(&gguf.path, &opts.tile_cache)
        } else {
            Vec::new()
        };
        let fingerprint = if paths.is_empty() {
            None
        } else {
            Fingerprint::of(gguf, &format!("requantize={:?}", opts.requantize))
                .inspect_err(|e| tracing::warn!(error = %e, "tile cache skipped: cannot fingerprint the GGUF"))
                .ok()
        };
        let mapped = fingerprint.as_ref().and_then(|fp| {
            paths.iter().find_map(|p| match TileCache::open(p, fp) {
                Ok(c) => Some(c),
                Err(why) => {
                    if p.exists() {
                        tracing::info!(path = %p.display(), %why, "tile cache not used; rebuilding it");
                    }
                    None
                }
            })
        });
        if let Some(c) = &mapped {
            tracing::debug!(path = %c.path().display(), "weights mapped from the tile cache");
        }
        Self {
            paths,
            fingerprint,
            mapped,
        }
    }
}

/// A second handle on the open file: the caller's stays free for nothing else to move its offset.
fn reopen(gguf: &GgufFile) -> Result<std::io::BufReader<std::fs::File>, EngineError> {
    let file = gguf
        .reader
        .get_ref()
        .try_clone()
        .map_err(|e| bad(gguf, format!("cannot reopen: {e}")))?;
    Ok(std::io::BufReader::new(file))
}

fn has_tensor(r: &TensorReader, name: &str) -> bool {
    r.content.tensor_infos.contains_key(name)
}

/// RoPE's cos/sin tables, with Llama 3's frequency factors when the file has them (Llama only).
fn read_rope_tables(
    r: &mut TensorReader,
    meta: &Metadata,
    device: &Device,
) -> Result<(Tensor, Tensor), EngineError> {
    let rope_freqs = if meta.arch.rope_freq_factors() && has_tensor(r, "rope_freqs.weight") {
        let t = r.read("rope_freqs.weight")?;
        Some(
            t.dequantize(device)
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| r.bad(format!("cannot read rope_freqs.weight: {e}")))?,
        )
    } else {
        None
    };
    let freq_scale = meta.gemma.as_ref().map_or(1.0, |g| g.global_freq_scale);
    rope_tables(
        meta.rope_dim,
        meta.freq_base,
        rope_freqs.as_deref(),
        freq_scale,
        meta.context_length,
        device,
    )
    .map_err(|e| r.bad(e.to_string()))
}

fn read_embedding(r: &mut TensorReader) -> Result<Embedding, EngineError> {
    Ok(match r.packed("token_embd.weight")? {
        Some(p) => Embedding::Packed(p),
        None => {
            let t = r.read("token_embd.weight")?;
            let t = r.requantized(t, "token_embd.weight")?;
            match r.repacked(t, "token_embd.weight")? {
                Weight::Packed(p) => Embedding::Packed(p),
                Weight::Candle { weight, .. } => Embedding::Candle(weight),
            }
        }
    })
}

/// The output projection; models with tied embeddings (SmolLM2, Llama 3.2) have no output.weight and
/// reuse the token embedding.
fn read_output(r: &mut TensorReader, embedding: &Embedding) -> Result<Linear, EngineError> {
    if has_tensor(r, "output.weight") {
        r.linear("output.weight")
    } else {
        Ok(Linear {
            weight: embedding.as_weight().map_err(|e| r.bad(e.to_string()))?,
            dense_min_rows: r.dense_min_rows,
            bias: None,
        })
    }
}

fn read_layers(r: &mut TensorReader, meta: &Metadata) -> Result<Vec<Layer>, EngineError> {
    let eps = meta.eps;
    let mut layers = Vec::with_capacity(meta.n_layer);
    for i in 0..meta.n_layer {
        let p = format!("blk.{i}");
        let mut projection = |name: &str| -> Result<Linear, EngineError> {
            let linear = r.linear(&format!("{p}.{name}.weight"))?;
            if !meta.arch.qkv_bias() {
                return Ok(linear);
            }
            let bias = r.bias(&format!("{p}.{name}.bias"))?;
            Ok(linear.with_bias(bias))
        };
        layers.push(Layer {
            wq: projection("attn_q")?,
            wk: projection("attn_k")?,
            wv: projection("attn_v")?,
            wo: r.linear(&format!("{p}.attn_output.weight"))?,
            w_gate: r.linear(&format!("{p}.ffn_gate.weight"))?,
            w_up: r.linear(&format!("{p}.ffn_up.weight"))?,
            w_down: r.linear(&format!("{p}.ffn_down.weight"))?,
            attn_norm: r.norm(&format!("{p}.attn_norm.weight"), eps)?,
            ffn_norm: r.norm(&format!("{p}.ffn_norm.weight"), eps)?,
            gemma: match &meta.gemma {
                Some(g) => Some(GemmaLayer {
                    q_norm: r.norm(&format!("{p}.attn_q_norm.weight"), eps)?,
                    k_norm: r.norm(&format!("{p}.attn_k_norm.weight"), eps)?,
                    post_attn_norm: r.norm(&format!("{p}.post_attention_norm.weight"), eps)?,
                    post_ffn_norm: r.norm(&format!("{p}.post_ffw_norm.weight"), eps)?,
                    window: g.window(i),
                }),
                None => None,
            },
        });
    }
    Ok(layers)
}

/// Writes the tile cache when weights were repacked at this load (none was mapped, or it lacked some);
/// returns what `LlamaConfig::tile_cache` reports.
fn write_tile_cache(
    r: &TensorReader,
    paths: &[std::path::PathBuf],
    fingerprint: Option<&Fingerprint>,
    phases: &mut LoadPhases,
) -> String {
    let mut tile_cache_use = match &r.cache {
        Some(c) => format!("mapped {}", c.path().display()),
        None => "off".to_string(),
    };
    if let Some(fp) = fingerprint {
        if !r.all_packed.is_empty() && (r.cache.is_none() || r.repacked_now > 0) {
            tile_cache_use = match tile_cache::write(paths, fp, &r.all_packed) {
                Ok(p) => {
                    tracing::info!(path = %p.display(), "tile cache written");
                    format!("written {}", p.display())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the tile cache; weights are repacked at every load");
                    format!("not written: {e}")
                }
            };
            phases.phase("tile cache written");
        }
    }
    tile_cache_use
}

struct ExpectedShapes {
    n_layer: usize,
    hidden: usize,
    q_dim: usize,
    kv_dim: usize,
    rope_dim: usize,
    qkv_bias: bool,
    rope_freq_factors: bool,
    head_dim: usize,
    /// Gemma 3's Q/K norms and post-attention / post-MLP norms.
    gemma_norms: bool,
}

/// Checks that every tensor the model needs exists with the shape the metadata implies (candle's order:
/// (rows, columns) = (outputs, inputs)). The vocabulary and FFN sizes come from the embedding and the
/// first gate matrix; every other tensor must agree with them.
fn check_tensor_shapes(gguf: &GgufFile, e: &ExpectedShapes) -> Result<(), EngineError> {
    let bad = |reason: String| EngineError::BadModel {
        path: gguf.path.clone(),
        reason,
    };
    let dims = |name: &str| -> Result<Vec<usize>, EngineError> {
        gguf.tensor_info(name)
            .map(|(d, _)| d.to_vec())
            .ok_or_else(|| bad(format!("the GGUF has no tensor `{name}`")))
    };
    let expect = |name: &str, want: &[usize]| -> Result<(), EngineError> {
        let got = dims(name)?;
        if got != want {
            return Err(bad(format!(
                "tensor `{name}` has shape {got:?}, expected {want:?} from the metadata \
                 (hidden {}, attention {}/{} , rope {})",
                e.hidden, e.q_dim, e.kv_dim, e.rope_dim
            )));
        }
        Ok(())
    };
    let emb = dims("token_embd.weight")?;
    if emb.len() != 2 || emb[1] != e.hidden || emb[0] == 0 {
        return Err(bad(format!(
            "tensor `token_embd.weight` has shape {emb:?}, expected [vocab, {}]",
            e.hidden
        )));
    }
    let vocab = emb[0];
    let ffn = dims("blk.0.ffn_gate.weight")?.first().copied().unwrap_or(0);
    if gguf.tensor_info("output.weight").is_some() {
        expect("output.weight", &[vocab, e.hidden])?;
    }
    if e.rope_freq_factors && gguf.tensor_info("rope_freqs.weight").is_some() {
        expect("rope_freqs.weight", &[e.rope_dim / 2])?;
    }
    expect("output_norm.weight", &[e.hidden])?;
    for i in 0..e.n_layer {
        let t = |s: &str| format!("blk.{i}.{s}.weight");
        expect(&t("attn_norm"), &[e.hidden])?;
        expect(&t("ffn_norm"), &[e.hidden])?;
        expect(&t("attn_q"), &[e.q_dim, e.hidden])?;
        expect(&t("attn_k"), &[e.kv_dim, e.hidden])?;
        expect(&t("attn_v"), &[e.kv_dim, e.hidden])?;
        if e.qkv_bias {
            let b = |s: &str| format!("blk.{i}.{s}.bias");
            expect(&b("attn_q"), &[e.q_dim])?;
            expect(&b("attn_k"), &[e.kv_dim])?;
            expect(&b("attn_v"), &[e.kv_dim])?;
        }
        expect(&t("attn_output"), &[e.hidden, e.q_dim])?;
        expect(&t("ffn_gate"), &[ffn, e.hidden])?;
        expect(&t("ffn_up"), &[ffn, e.hidden])?;
        expect(&t("ffn_down"), &[e.hidden, ffn])?;
        if e.gemma_norms {
            expect(&t("attn_q_norm"), &[e.head_dim])?;
            expect(&t("attn_k_norm"), &[e.head_dim])?;
            expect(&t("post_attention_norm"), &[e.hidden])?;
            expect(&t("post_ffw_norm"), &[e.hidden])?;
        }
    }
    Ok(())
}

/// Reads tensors by name, requantizing matmul weights and counting the resulting types.
struct TensorReader<'a> {
    content: &'a candle_core::quantized::gguf_file::Content,
    reader: &'a mut std::io::BufReader<std::fs::File>,
    device: &'a Device,
    path: &'a std::path::Path,
    opts: &'a LoadOptions,
    dense_min_rows: usize,
    types: std::collections::BTreeMap<String, usize>,
    /// Tiles of an earlier load, used in place when they match.
    cache: Option<TileCache>,
    /// Every packed matrix, in load order, when a tile cache may be written after the load.
    keep_for_cache: bool,
    all_packed: Vec<(String, Arc<PackedWeight>)>,
    /// Matrices repacked from the GGUF (not found in the tile cache).
    repacked_now: usize,
}

impl TensorReader<'_> {
    fn bad(&self, reason: String) -> EngineError {
        EngineError::BadModel {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn read(&mut self, name: &str) -> Result<QTensor, EngineError> {
        self.content
            .tensor(self.reader, name, self.device)
            .map_err(|e| self.bad(format!("cannot read tensor `{name}`: {e}")))
    }

    fn requantized(&mut self, t: QTensor, name: &str) -> Result<QTensor, EngineError> {
        let t = requantize(t, self.opts.requantize, self.device)
            .map_err(|e| self.bad(format!("cannot requantize `{name}`: {e}")))?;
        *self.types.entry(format!("{:?}", t.dtype())).or_default() += 1;
        Ok(t)
    }

    /// The tensor repacked for our kernels, streamed from the file, when they cover it (CPU with
    /// AVX-512 VNNI, Q4_K / Q6_K / Q8_0, `packed_weights`); `None` otherwise.
    fn packed(&mut self, name: &str) -> Result<Option<Arc<PackedWeight>>, EngineError> {
        if !self.packing() {
            return Ok(None);
        }
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Ok(None);
        };
        let dims = info.shape.dims();
        // Q4_1 (candle's dot product is a scalar loop) goes straight to Q8_0 tiles, as `requantize`
        // would make it, without the f32 round trip.
        let q4_1_to_q8_0 = info.ggml_dtype == GgmlDType::Q4_1
            && self.opts.requantize == Requantize::Auto
            && PackedWeight::covers_q4_1(dims);
        if !q4_1_to_q8_0 && !PackedWeight::covers(info.ggml_dtype, dims) {
            return Ok(None);
        }
        let tile_dtype = if q4_1_to_q8_0 {
            GgmlDType::Q8_0
        } else {
            info.ggml_dtype
        };
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.weight(name, tile_dtype, dims[0], dims[1]));
        let p = match cached {
            Some(p) => p,
            None => {
                self.repacked_now += 1;
                self.packed_from_gguf(name, q4_1_to_q8_0)?
            }
        };
        let p = Arc::new(p);
        *self.types.entry(format!("{:?}", p.dtype())).or_default() += 1;
        if self.keep_for_cache {
            self.all_packed.push((name.to_string(), p.clone()));
        }
        Ok(Some(p))
    }

    /// Repacks tensor `name` (which `packed` checked our kernels cover) from the GGUF's bytes.
    fn packed_from_gguf(
        &mut self,
        name: &str,
        q4_1_to_q8_0: bool,
    ) -> Result<PackedWeight, EngineError> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.bad(format!("the GGUF has no tensor `{name}`")));
        };
        let dims = info.shape.dims();
        let start = self.content.tensor_data_offset + info.offset;
        let (block, block_bytes) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
        let len = dims[0] * (dims[1] / block) * block_bytes;
        // The tensor's bytes mapped (not copied) and repacked in parallel straight from the page
        // cache; the map is dropped after this tensor, so at most one tensor's source pages count in
        // the resident memory next to the tiles.
        let page = 4096u64;
        let aligned = start - start % page;
        let skip = (start - aligned) as usize;
        // SAFETY: the file is opened read-only and not modified by novapay while mapped; a GGUF
        // truncated by another process would fault, which the length check at open makes unlikely.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(aligned)
                .len(skip + len)
                .map(self.reader.get_ref())
        }
        .map_err(|e| self.bad(format!("cannot map tensor `{name}`: {e}")))?;
        let p = if q4_1_to_q8_0 {
            PackedWeight::from_q4_1_bytes(dims[0], dims[1], &map[skip..])
        } else {
            PackedWeight::from_bytes(info.ggml_dtype, dims[0], dims[1], &map[skip..])
        }
        .map_err(|e| self.bad(format!("cannot read tensor `{name}`: {e}")))?;
        drop(map);
        Ok(p)
    }

    fn packing(&self) -> bool {
        self.opts.packed_weights && self.device.is_cpu() && packed::available()
    }

    /// A tensor already in memory (requantized at load: Q4_1 -> Q8_0), repacked when our kernels
    /// cover it; candle's otherwise.
    fn repacked(&self, t: QTensor, name: &str) -> Result<Weight, EngineError> {
        if self.packing() {
            let p = PackedWeight::from_qtensor(&t)
                .map_err(|e| self.bad(format!("cannot repack `{name}`: {e}")))?;
            if let Some(p) = p {
                return Ok(Weight::Packed(Arc::new(p)));
            }
        }
        Weight::candle(Arc::new(t)).map_err(|e| self.bad(e.to_string()))
    }

    fn linear(&mut self, name: &str) -> Result<Linear, EngineError> {
        if let Some(p) = self.packed(name)? {
            return Ok(Linear {
                weight: Weight::Packed(p),
                dense_min_rows: self.dense_min_rows,
                bias: None,
            });
        }
        let t = self.read(name)?;
        let t = self.requantized(t, name)?;
        let weight = self.repacked(t, name)?;
        Ok(Linear {
            weight,
            dense_min_rows: self.dense_min_rows,
            bias: None,
        })
    }

    /// A bias vector, as f32 (llama.cpp keeps them F32; another type is dequantized).
    fn bias(&mut self, name: &str) -> Result<Tensor, EngineError> {
        let t = self.read(name)?;
        t.dequantize(self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| self.bad(format!("cannot read tensor `{name}`: {e}")))
    }

    fn norm(&mut self, name: &str, eps: f64) -> Result<RmsNorm, EngineError> {
        let t = self.read(name)?;
        RmsNorm::from_qtensor(t, eps).map_err(|e| self.bad(e.to_string()))
    }
}

fn requantize(t: QTensor, mode: Requantize, device: &Device) -> candle_core::Result<QTensor> {
    let slow_on_cpu = matches!(
        t.dtype(),
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    );
    let fits_q8 = t
        .shape()
        .dims()
        .last()
        .is_some_and(|d| d % GgmlDType::Q8_0.block_size() == 0);
    if mode == Requantize::Auto && slow_on_cpu && fits_q8 && device.is_cpu() {
        QTensor::quantize(&t.dequantize(device)?, GgmlDType::Q8_0)
    } else {
        Ok(t)
    }
}

/// cos/sin tables for RoPE. `freq_factors` is Llama 3's `rope_freqs.weight`: llama.cpp divides each
/// frequency by its factor, which is how the "llama3" rope scaling reaches a GGUF. `freq_scale`
/// multiplies the positions (linear scaling, Gemma 3's global layers).
fn rope_tables(
    rope_dim: usize,
    freq_base: f32,
    freq_factors: Option<&[f32]>,
    freq_scale: f32,
    positions: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..rope_dim)
        .step_by(2)
        .enumerate()
        .map(|(j, i)| {
            let f = 1f32 / freq_base.powf(i as f32 / rope_dim as f32);
            match freq_factors.and_then(|ff| ff.get(j)) {
                Some(factor) if *factor > 0.0 => f / factor,
                _ => f,
            }
        })
        .collect();
    let n = inv_freq.len();
    let inv_freq = Tensor::from_vec(inv_freq, (1, n), device)?;
    let mut t = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    if freq_scale != 1.0 {
        t = t.affine(freq_scale as f64, 0.0)?;
    }
    let freqs = t.matmul(&inv_freq)?;
    Ok((freqs.cos()?, freqs.sin()?))
}
