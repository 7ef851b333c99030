//! The BERT encoder forward pass on the CPU, one unpadded sequence at a time, for sentence embeddings.
//!
//! Why ours and not candle-transformers' `BertModel` (which stays the reference: `embed::reference` and
//! the tests compare against it): candle runs a batch padded to its longest text, with a mask added to
//! every score; its linear layers are batched matmuls against a weight broadcast per sequence; each
//! of the ~20 ops per layer allocates a fresh tensor, and `transpose_for_scores` / `contiguous` copy
//! Q, K, V and the context; softmax `exp` and GELU `erf` are scalar libm calls. With 2 threads every op
//! is split across both, with a join per op (~120 per batch and layer). That ran at ~0.55x
//! sentence-transformers (PyTorch + MKL) on MiniLM-L6 here.
//!
//! Here: the same safetensors weights (loaded through candle's `VarBuilder`, so the same names and
//! prefixes), Q/K/V fused into one projection, each sequence computed at its own length (no padding,
//! no mask), attention per head on strided views of the fused projection (no copies), the bias and
//! residual folded into the matmul's destination, vectorized softmax/GELU/layer norm
//! (`embed::kernels`), and whole sequences spread over the threads (one single-threaded matmul
//! chain per sequence, no join per op). The matmuls are the `gemm` crate's (candle's own CPU matmul).

use candle_core::DType;
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use gemm::Parallelism;

use super::kernels;

/// A linear layer, weight stored transposed (`[in, out]`, row-major) for the matmul's right-hand side.
struct Linear {
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value in one `[hidden, 3 * hidden]` projection.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The token embedding table. Mapped from the safetensors file where it is stored as f32: a
/// multilingual vocabulary is most of the model (multilingual-e5-small: 250,037 x 384 f32, 384 MB
/// of its 470), and a support desk's texts touch a few thousand of its rows, so reading rows from the
/// mapping keeps only those pages resident and loads without copying the table.
enum WordTable {
    Owned(Vec<f32>),
    Mapped {
        file: candle_core::safetensors::MmapedSafetensors,
        name: String,
    },
}

impl WordTable {
    /// Opens the table `name` of `weights` mapped, when it is stored as `[rows, cols]` little-endian
    /// f32 (the common case); `None` for anything else, which is then copied as before.
    fn mapped(weights: &std::path::Path, name: String, rows: usize, cols: usize) -> Option<Self> {
        // SAFETY: the file is mapped read-only and novapay never writes model files; as for every
        // mapped model file, replacing it in place under a running process is not supported (the
        // models folder is the trust boundary, see SECURITY.md).
        let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights) }.ok()?;
        let view = file.get(&name).ok()?;
        let fits = view.dtype() == safetensors::Dtype::F32
            && view.shape() == [rows, cols]
            && view.data().len() == rows * cols * 4
            && cfg!(target_endian = "little");
        drop(view);
        fits.then_some(Self::Mapped { file, name })
    }

    /// The table's rows for one forward pass.
    fn reader(&self) -> Result<RowReader<'_>, String> {
        match self {
            Self::Owned(v) => Ok(RowReader::Slice(v)),
            Self::Mapped { file, name } => {
                let view = file
                    .get(name)
                    .map_err(|e| format!("word embeddings: {e}"))?;
                Ok(RowReader::Bytes(view.data()))
            }
        }
    }
}

/// The table's storage for one forward pass.
enum RowReader<'a> {
    Slice(&'a [f32]),
    Bytes(&'a [u8]),
}

impl RowReader<'_> {
    /// `out[i] += row[i]` for row `id` of width `out.len()` (the caller checked `id`).
    fn add_row(&self, id: usize, out: &mut [f32]) {
        let h = out.len();
        match self {
            Self::Slice(v) => {
                for (o, w) in out.iter_mut().zip(&v[id * h..(id + 1) * h]) {
                    *o += w;
                }
            }
            Self::Bytes(b) => {
                let row = &b[id * h * 4..(id + 1) * h * 4];
                for (o, w) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o += f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                }
            }
        }
    }
}

pub struct BertEncoder {
    word_embeddings: WordTable,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Vec<f32>,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
    eps: f32,
    act: HiddenAct,
}

fn tensor_vec(vb: &VarBuilder, shape: &[usize], name: &str) -> candle_core::Result<Vec<f32>> {
    vb.get(shape.to_vec(), name)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

fn load_linear(vb: VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Linear> {
    let w = vb.get((outputs, inputs), "weight")?.to_dtype(DType::F32)?;
    Ok(Linear {
        weight_t: w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
        bias: tensor_vec(&vb, &[outputs], "bias")?,
        inputs,
        outputs,
    })
}

fn load_norm(vb: VarBuilder, size: usize) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm {
        weight: tensor_vec(&vb, &[size], "weight")?,
        bias: tensor_vec(&vb, &[size], "bias")?,
    })
}

/// Q, K and V side by side: one `[hidden, 3 * hidden]` right-hand side, one matmul per layer.
fn fuse_qkv(q: Linear, k: Linear, v: Linear) -> Linear {
    let (inputs, h) = (q.inputs, q.outputs);
    let mut weight_t = Vec::with_capacity(inputs * 3 * h);
    for i in 0..inputs {
        for part in [&q, &k, &v] {
            weight_t.extend_from_slice(&part.weight_t[i * h..(i + 1) * h]);
        }
    }
    let bias = [q.bias, k.bias, v.bias].concat();
    Linear {
        weight_t,
        bias,
        inputs,
        outputs: 3 * h,
    }
}

impl BertEncoder {
    /// Loads a BERT encoder (`embeddings.*`, `encoder.layer.N.*`, optionally under `bert.` or the
    /// config's `model_type.`) from safetensors, as candle-transformers' `BertModel::load` does.
    /// With `weights` (the file `vb` reads), the token embedding table is read from a mapping of it
    /// instead of copied ([`WordTable`]).
    pub fn load(
        vb: VarBuilder,
        config: &Config,
        weights: Option<&std::path::Path>,
    ) -> candle_core::Result<Self> {
        let root = [
            Some(String::new()),
            Some("bert".to_string()),
            config.model_type.clone(),
        ]
        .into_iter()
        .flatten()
        .map(|p| if p.is_empty() { vb.clone() } else { vb.pp(p) })
        .find(|v| v.contains_tensor("embeddings.word_embeddings.weight"))
        .unwrap_or_else(|| vb.clone());
        let h = config.hidden_size;
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            );
        }
        let emb = root.pp("embeddings");
        let word = emb.pp("word_embeddings");
        let mapped = weights.and_then(|w| {
            let name = format!("{}.weight", word.prefix());
            WordTable::mapped(w, name, config.vocab_size, h)
        });
        let word_embeddings = match mapped {
            Some(table) => table,
            None => WordTable::Owned(tensor_vec(&word, &[config.vocab_size, h], "weight")?),
        };
        let position_embeddings = tensor_vec(
            &emb.pp("position_embeddings"),
            &[config.max_position_embeddings, h],
            "weight",
        )?;
        let token_type_embeddings = tensor_vec(
            &emb.pp("token_type_embeddings"),
            &[config.type_vocab_size, h],
            "weight",
        )?;
        let embeddings_norm = load_norm(emb.pp("LayerNorm"), h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = root.pp(format!("encoder.layer.{i}"));
            let att = l.pp("attention");
            let q = load_linear(att.pp("self.query"), h, h)?;
            let k = load_linear(att.pp("self.key"), h, h)?;
            let v = load_linear(att.pp("self.value"), h, h)?;
            layers.push(Layer {
                qkv: fuse_qkv(q, k, v),
                attn_out: load_linear(att.pp("output.dense"), h, h)?,
                attn_norm: load_norm(att.pp("output.LayerNorm"), h)?,
                intermediate: load_linear(l.pp("intermediate.dense"), h, config.intermediate_size)?,
                output: load_linear(l.pp("output.dense"), config.intermediate_size, h)?,
                output_norm: load_norm(l.pp("output.LayerNorm"), h)?,
            });
        }
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
            hidden: h,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            type_vocab: config.type_vocab_size,
            eps: config.layer_norm_eps as f32,
            act: config.hidden_act,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The last hidden states `[ids.len(), hidden]` (row-major) of one sequence, every token attended.
    /// `threads > 1` splits each matmul across rayon's pool (for a lone sequence); several sequences
    /// are better spread one per thread with `threads = 1`.
    pub fn forward(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        threads: usize,
    ) -> Result<Vec<f32>, String> {
        let len = ids.len();
        let h = self.hidden;
        if type_ids.len() != len {
            return Err(format!("{} token ids but {} type ids", len, type_ids.len()));
        }
        if len > self.max_positions {
            return Err(format!(
                "{len} tokens, the model has {} positions",
                self.max_positions
            ));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let par = if threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        let mut x = vec![0f32; len * h];
        let words = self.word_embeddings.reader()?;
        for (t, (&id, &tt)) in ids.iter().zip(type_ids).enumerate() {
            let (id, tt) = (id as usize, tt as usize);
            if id >= self.vocab || tt >= self.type_vocab {
                return Err(format!(
                    "token id {id} / type id {tt} outside the model's vocabulary ({} / {})",
                    self.vocab, self.type_vocab
                ));
            }
            let pos = &self.position_embeddings[t * h..(t + 1) * h];
            let typ = &self.token_type_embeddings[tt * h..(tt + 1) * h];
            let row = &mut x[t * h..(t + 1) * h];
            words.add_row(id, row);
            // (word + type) + position, the order candle's BertEmbeddings adds them in.
            for (i, v) in row.iter_mut().enumerate() {
                *v = *v + typ[i] + pos[i];
            }
        }
        let norm = &self.embeddings_norm;
        kernels::layer_norm(&mut x, &norm.weight, &norm.bias, self.eps);

        let mut qkv = vec![0f32; len * 3 * h];
        let mut ctx = vec![0f32; len * h];
        let mut scores = vec![0f32; len * len];
        let mut inter = vec![0f32; len * self.intermediate];
        for layer in &self.layers {
            linear(&x, len, &layer.qkv, &mut qkv, false, par);
            self.attention(&qkv, len, &mut scores, &mut ctx, par);
            // x = LayerNorm(x + ctx W_o + b_o): the residual is the matmul's destination.
            linear(&ctx, len, &layer.attn_out, &mut x, true, par);
            kernels::layer_norm(
                &mut x,
                &layer.attn_norm.weight,
                &layer.attn_norm.bias,
                self.eps,
            );
            linear(&x, len, &layer.intermediate, &mut inter, false, par);
            match self.act {
                HiddenAct::Gelu => kernels::gelu_erf(&mut inter),
                HiddenAct::GeluApproximate => inter.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
                HiddenAct::Relu => inter.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
            linear(&inter, len, &layer.output, &mut x, true, par);
            kernels::layer_norm(
                &mut x,
                &layer.output_norm.weight,
                &layer.output_norm.bias,
                self.eps,
            );
        }
        Ok(x)
    }

    /// Multi-head self-attention over the fused `[len, 3 * hidden]` projection into `ctx`
    /// (`[len, hidden]`, heads side by side as BERT concatenates them).
    fn attention(
        &self,
        qkv: &[f32],
        len: usize,
        scores: &mut [f32],
        ctx: &mut [f32],
        par: Parallelism,
    ) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        for head in 0..self.heads {
            let q = View {
                offset: head * d,
                rows: len,
                cols: d,
                row_stride: 3 * h,
                col_stride: 1,
            };
            // K^T: element (dim, token) of the key block.
            let k_t = View {
                offset: h + head * d,
                rows: d,
                cols: len,
                row_stride: 1,
                col_stride: 3 * h,
            };
            let v = View {
                offset: 2 * h + head * d,
                rows: len,
                cols: d,
                row_stride: 3 * h,
                col_stride: 1,
            };
            let s = View::dense(len, len);
            matmul(scores, s, (qkv, q), (qkv, k_t), false, scale, par);
            for row in scores.chunks_exact_mut(len) {
                kernels::softmax(row);
            }
            let out = View {
                offset: head * d,
                rows: len,
                cols: d,
                row_stride: h,
                col_stride: 1,
            };
            matmul(ctx, out, (&*scores, s), (qkv, v), false, 1.0, par);
        }
    }
}

/// BERT's `gelu_new` / tanh approximation (`hidden_act = "gelu_approximate"`), rare: scalar.
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
}

/// `out = x W^T + b` (or `out += x W^T + b` when `accumulate`) for `rows` rows of `x`.
fn linear(
    x: &[f32],
    rows: usize,
    layer: &Linear,
    out: &mut [f32],
    accumulate: bool,
    par: Parallelism,
) {
    let n = layer.outputs;
    let out = &mut out[..rows * n];
    for row in out.chunks_exact_mut(n) {
        if accumulate {
            row.iter_mut().zip(&layer.bias).for_each(|(o, b)| *o += b);
        } else {
            row.copy_from_slice(&layer.bias);
        }
    }
    let threads = match par {
        Parallelism::Rayon(t) => t,
        _ => 1,
    };
    if threads > 1 && rows < SKINNY_ROWS && n >= 64 * threads {
        columns_in_parallel(out, rows, x, layer, threads);
        return;
    }
    matmul(
        out,
        View::dense(rows, n),
        (x, View::dense(rows, layer.inputs)),
        (&layer.weight_t[..], View::dense(layer.inputs, n)),
        true,
        1.0,
        par,
    );
}

/// Below this many rows (a customer's question is 10-40 tokens) `gemm` runs a matmul on one thread
/// whatever it is offered: its column blocks are sized for the cache, so a `[rows, 1152]` product
/// is one block and one job.
const SKINNY_ROWS: usize = 64;

/// `out += x W` with `W`'s columns cut into `threads` contiguous ranges, one single-threaded `gemm`
/// each: what lets a lone short question use every core. Each output element is still reduced over
/// the whole of `k` by one kernel call, as without the split.
fn columns_in_parallel(out: &mut [f32], rows: usize, x: &[f32], layer: &Linear, threads: usize) {
    let (k, n) = (layer.inputs, layer.outputs);
    assert!(
        out.len() >= rows * n && x.len() >= rows * k && layer.weight_t.len() >= k * n,
        "linear shapes: {rows} x {k} -> {n}"
    );
    /// The destination, shared by threads that write disjoint column ranges of it.
    #[derive(Clone, Copy)]
    struct Dst(*mut f32);
    // SAFETY: each thread writes only its own column range (below), so no element is shared.
    unsafe impl Send for Dst {}
    unsafe impl Sync for Dst {}
    let dst = Dst(out.as_mut_ptr());
    let per = n.div_ceil(threads);
    rayon::scope(|scope| {
        for t in 0..threads {
            let (c0, c1) = (t * per, ((t + 1) * per).min(n));
            if c0 >= c1 {
                continue;
            }
            let rhs = &layer.weight_t[..];
            scope.spawn(move |_| {
                let dst = dst;
                // SAFETY: rows x (c1 - c0) elements at dst + c0 with row stride n lie inside `out`
                // (checked above: c1 <= n); the ranges [c0, c1) of the threads are disjoint; lhs
                // (rows x k, row stride k) and rhs (k x (c1 - c0) at column c0, row stride n) lie
                // inside their slices, which nothing writes while the scope runs.
                unsafe {
                    gemm::gemm(
                        rows,
                        c1 - c0,
                        k,
                        dst.0.add(c0),
                        1,
                        n as isize,
                        true,
                        x.as_ptr(),
                        1,
                        k as isize,
                        rhs.as_ptr().add(c0),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    )
                }
            });
        }
    });
}

/// A strided matrix inside a slice: element (r, c) at `offset + r * row_stride + c * col_stride`.
#[derive(Clone, Copy, Debug)]
struct View {
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl View {
    fn dense(rows: usize, cols: usize) -> Self {
        Self {
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Whether every element lies inside a slice of `len` values.
    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < len
    }
}

/// `dst = scale * lhs rhs` (`dst += ...` when `accumulate`): the safe face of `gemm::gemm`, which
/// checks every view against its slice; the borrows keep `dst` apart from the inputs.
fn matmul(
    dst: &mut [f32],
    d: View,
    (lhs, l): (&[f32], View),
    (rhs, r): (&[f32], View),
    accumulate: bool,
    scale: f32,
    par: Parallelism,
) {
    assert!(
        l.rows == d.rows && r.cols == d.cols && l.cols == r.rows,
        "matmul shapes {l:?} x {r:?} -> {d:?}"
    );
    assert!(
        d.fits(dst.len()) && l.fits(lhs.len()) && r.fits(rhs.len()),
        "matmul view outside its slice"
    );
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    // SAFETY: every element the three views address lies inside its slice (checked above); `dst` is
    // a unique borrow, so it overlaps neither input; gemm reads/writes only those elements.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr().add(d.offset),
            d.col_stride as isize,
            d.row_stride as isize,
            accumulate,
            lhs.as_ptr().add(l.offset),
            l.col_stride as isize,
            l.row_stride as isize,
            rhs.as_ptr().add(r.offset),
            r.col_stride as isize,
            r.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// The scalar definition the strided gemm call is held to.
    fn matmul_reference(a: &[f32], av: View, b: &[f32], bv: View) -> Vec<f32> {
        let at = |r: usize, c: usize| a[av.offset + r * av.row_stride + c * av.col_stride] as f64;
        let bt = |r: usize, c: usize| b[bv.offset + r * bv.row_stride + c * bv.col_stride] as f64;
        let mut out = vec![0f32; av.rows * bv.cols];
        for i in 0..av.rows {
            for j in 0..bv.cols {
                out[i * bv.cols + j] =
                    (0..av.cols).map(|k| at(i, k) * bt(k, j)).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn strided_matmul_matches_scalar_reference() {
        // Q K^T on strided views of a fused [len, 3h] block, as the attention does.
        let (len, h, d) = (37, 48, 16);
        let qkv = values(len * 3 * h, 7);
        let q = View {
            offset: d,
            rows: len,
            cols: d,
            row_stride: 3 * h,
            col_stride: 1,
        };
        let k_t = View {
            offset: h + d,
            rows: d,
            cols: len,
            row_stride: 1,
            col_stride: 3 * h,
        };
        for par in [Parallelism::None, Parallelism::Rayon(2)] {
            let mut got = vec![0f32; len * len];
            matmul(
                &mut got,
                View::dense(len, len),
                (&qkv, q),
                (&qkv, k_t),
                false,
                0.5,
                par,
            );
            let want = matmul_reference(&qkv, q, &qkv, k_t);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 0.5 * w).abs() < 1e-5, "{g} vs {}", 0.5 * w);
            }
        }
    }

    #[test]
    fn linear_adds_bias_and_accumulates_residual() {
        let (rows, inputs, outputs) = (5, 24, 40);
        let w = values(outputs * inputs, 3);
        let x = values(rows * inputs, 5);
        let layer = Linear {
            weight_t: (0..inputs * outputs)
                .map(|i| w[(i % outputs) * inputs + i / outputs])
                .collect(),
            bias: values(outputs, 9),
            inputs,
            outputs,
        };
        let residual = values(rows * outputs, 11);
        let mut out = residual.clone();
        linear(&x, rows, &layer, &mut out, true, Parallelism::None);
        for r in 0..rows {
            for o in 0..outputs {
                let dot: f64 = (0..inputs)
                    .map(|i| x[r * inputs + i] as f64 * w[o * inputs + i] as f64)
                    .sum();
                let want = dot + layer.bias[o] as f64 + residual[r * outputs + o] as f64;
                assert!((out[r * outputs + o] as f64 - want).abs() < 1e-5);
            }
        }
    }

    /// A two-layer BERT small enough to compare element by element.
    fn tiny_config() -> Config {
        Config {
            vocab_size: 50,
            hidden_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 3,
            intermediate_size: 80,
            max_position_embeddings: 40,
            type_vocab_size: 2,
            ..Config::default()
        }
    }

    /// A small random BERT with odd sizes, stored under a `bert.` prefix as some checkpoints are.
    fn random_bert(config: &Config) -> std::collections::HashMap<String, candle_core::Tensor> {
        use candle_core::Tensor;
        let h = config.hidden_size;
        let mut seed = 1u64;
        let mut t = |shape: &[usize], scale: f32| {
            seed += 1;
            let n = shape.iter().product();
            let v: Vec<f32> = values(n, seed).into_iter().map(|x| x * scale).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let mut m = std::collections::HashMap::new();
        let mut put = |name: String, shape: &[usize], scale: f32| {
            m.insert(format!("bert.{name}"), t(shape, scale));
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            &[config.vocab_size, h],
            1.0,
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            &[config.max_position_embeddings, h],
            0.5,
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            &[config.type_vocab_size, h],
            0.5,
        );
        put("embeddings.LayerNorm.weight".into(), &[h], 1.0);
        put("embeddings.LayerNorm.bias".into(), &[h], 0.1);
        for i in 0..config.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            for part in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
            ] {
                put(format!("{l}.{part}.weight"), &[h, h], 0.3);
                put(format!("{l}.{part}.bias"), &[h], 0.1);
            }
            put(
                format!("{l}.intermediate.dense.weight"),
                &[config.intermediate_size, h],
                0.3,
            );
            put(
                format!("{l}.intermediate.dense.bias"),
                &[config.intermediate_size],
                0.1,
            );
            put(
                format!("{l}.output.dense.weight"),
                &[h, config.intermediate_size],
                0.3,
            );
            put(format!("{l}.output.dense.bias"), &[h], 0.1);
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(format!("{l}.{norm}.weight"), &[h], 1.0);
                put(format!("{l}.{norm}.bias"), &[h], 0.1);
            }
        }
        m
    }

    /// The hand-written forward equals candle-transformers' `BertModel` (the reference) token by token,
    /// including on a padded batch whose padding candle masks and ours never computes.
    #[test]
    fn forward_matches_candle_bert_model() {
        use candle_core::Tensor;
        use candle_transformers::models::bert::BertModel;
        let config = tiny_config();
        assert_eq!(config.hidden_act, HiddenAct::Gelu);
        let weights = random_bert(&config);
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        let ours = BertEncoder::load(vb.clone(), &config, None).unwrap();
        let reference = BertModel::load(vb, &config).unwrap();
        let seqs: [&[u32]; 2] = [&[1, 7, 3, 44, 9, 12, 2, 5, 30, 31, 17, 2], &[1, 8, 49, 2]];
        let len = seqs[0].len();
        let mut ids = vec![0u32; 2 * len];
        let mut types = vec![0u32; 2 * len];
        let mut mask = vec![0u32; 2 * len];
        for (s, seq) in seqs.iter().enumerate() {
            for (t, &id) in seq.iter().enumerate() {
                ids[s * len + t] = id;
                types[s * len + t] = u32::from(t >= 3);
                mask[s * len + t] = 1;
            }
        }
        let tensor = |v: &[u32]| Tensor::from_vec(v.to_vec(), (2, len), &Device::Cpu).unwrap();
        let want = reference
            .forward(&tensor(&ids), &tensor(&types), Some(&tensor(&mask)))
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        for (s, seq) in seqs.iter().enumerate() {
            for threads in [1, 2] {
                let got = ours
                    .forward(seq, &types[s * len..s * len + seq.len()], threads)
                    .unwrap();
                for (t, row) in got.chunks(config.hidden_size).enumerate() {
                    for (g, w) in row.iter().zip(&want[s][t]) {
                        assert!((g - w).abs() < 1e-4, "seq {s} token {t}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_mapped_token_table_gives_the_same_vectors_as_a_copied_one() {
        let config = tiny_config();
        let weights = random_bert(&config);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&weights, &path).unwrap();
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        let copied = BertEncoder::load(vb.clone(), &config, None).unwrap();
        let mapped = BertEncoder::load(vb, &config, Some(&path)).unwrap();
        assert!(matches!(copied.word_embeddings, WordTable::Owned(_)));
        assert!(matches!(mapped.word_embeddings, WordTable::Mapped { .. }));
        let ids = [1u32, 7, 3, 49, 0, 12, 2];
        let types = [0u32, 0, 0, 1, 1, 1, 0];
        assert_eq!(
            copied.forward(&ids, &types, 1).unwrap(),
            mapped.forward(&ids, &types, 1).unwrap()
        );
        // An id past the table is still an error, not a read past the mapping.
        assert!(mapped.forward(&[50], &[0], 1).is_err());
    }

    #[test]
    fn bad_token_ids_are_errors_not_panics() {
        let config = Config {
            vocab_size: 10,
            hidden_size: 12,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 4,
            ..Config::default()
        };
        let vb = VarBuilder::from_tensors(random_bert(&config), DType::F32, &Device::Cpu);
        let ours = BertEncoder::load(vb, &config, None).unwrap();
        assert!(ours
            .forward(&[1, 10], &[0, 0], 1)
            .unwrap_err()
            .contains("vocabulary"));
        assert!(ours
            .forward(&[1, 2, 3, 4, 5], &[0; 5], 1)
            .unwrap_err()
            .contains("positions"));
        assert!(ours
            .forward(&[1, 2], &[0], 1)
            .unwrap_err()
            .contains("type ids"));
        assert_eq!(ours.forward(&[], &[], 1).unwrap().len(), 0);
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_past_its_slice_is_refused() {
        let a = vec![0f32; 10];
        let mut out = vec![0f32; 4];
        let v = View::dense(2, 5);
        let too_long = View::dense(5, 2);
        matmul(
            &mut out,
            View::dense(2, 2),
            (&a, v),
            (&a[..9], too_long),
            false,
            1.0,
            Parallelism::None,
        );
    }
}
