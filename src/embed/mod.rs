//! Sentence embeddings with BERT-family sentence-transformers models on candle: safetensors weights,
//! `tokenizer.json`, the pooling named in `1_Pooling/config.json` (mean or CLS) and L2 normalization,
//! matching sentence-transformers (truncation at `max_seq_length`; each text computed at its own length,
//! which equals sentence-transformers' padded and masked batch).
//!
//! On the CPU the encoder is our own forward ([`bert`], faster than candle's there); on a GPU it is
//! candle-transformers' `BertModel`, which also stays the reference the tests compare against.

mod bert;
mod e5s1;
mod kernels;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use bert::BertEncoder;
pub use e5s1::{convert_e5s1, ConvertReport, E5_Q4_DESCRIPTION};

use crate::device::DeviceChoice;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model file not found: {0}")]
    ModelNotFound(PathBuf),
    #[error("cannot use embedding model {path}: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("embedding failed: {0}")]
    Internal(String),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        EmbedError::Internal(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
}

/// What an embedder's name says about how it was trained: e5 models want "query: " / "passage: "
/// prefixes, and rate unrelated text higher (their cosines crowd near 1), so the retrieval gate's
/// similarity floor differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    E5,
    Other,
}

impl ModelFamily {
    /// From a Hub id or a local folder name, e.g. "intfloat/multilingual-e5-small".
    pub fn detect(model: &str) -> Self {
        if model.to_ascii_lowercase().contains("e5-") {
            Self::E5
        } else {
            Self::Other
        }
    }

    pub fn query_prefix(self) -> &'static str {
        match self {
            Self::E5 => "query: ",
            Self::Other => "",
        }
    }

    pub fn passage_prefix(self) -> &'static str {
        match self {
            Self::E5 => "passage: ",
            Self::Other => "",
        }
    }

    /// The cosine similarity below which the best excerpt cannot be an answer, when the family
    /// needs its own (None: the gate's default).
    ///
    /// e5, measured on the 4-bit (Q4_0) copy of multilingual-e5-small (`eval answerability` on
    /// eval/questions.jsonl and the heldout-3/heldout-4 sets, data and kb: 78 answerable, 44
    /// off-topic questions): the best excerpt's cosine of answerable questions starts at 0.804
    /// (median ~0.86), that of off-topic ones reaches 0.908 (median ~0.86): no absolute floor
    /// separates them. 0.80 refuses no answerable question and 2 of 44 off-topic ones; 0.81 starts
    /// refusing answerable ones, and from 0.84 up a floor refuses more answerable than off-topic
    /// questions. So 0.80 stays, as a floor against far-off text only; the answerability gate
    /// decides the rest.
    pub fn similarity_floor(self) -> Option<f32> {
        match self {
            Self::E5 => Some(0.80),
            Self::Other => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// A sentence-transformers model folder.
    pub dir: PathBuf,
    /// Text put before queries and passages (e5 models want "query: " and "passage: ").
    pub query_prefix: String,
    pub passage_prefix: String,
    pub batch_size: usize,
    pub device: DeviceChoice,
}

impl EmbedderOptions {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            query_prefix: String::new(),
            passage_prefix: String::new(),
            batch_size: 32,
            device: DeviceChoice::default(),
        }
    }
}

/// Which forward pass computes the hidden states.
enum Encoder {
    /// Ours, on the CPU: one unpadded sequence per thread.
    Cpu(BertEncoder),
    /// candle-transformers' BERT on padded batches: GPUs, and the reference on the CPU.
    Candle { model: BertModel, device: Device },
}

pub struct Embedder {
    encoder: Encoder,
    tokenizer: Tokenizer,
    pooling: Pooling,
    dim: usize,
    max_length: usize,
    opts: EmbedderOptions,
    pub name: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

impl Embedder {
    pub fn load(opts: EmbedderOptions) -> Result<Self, EmbedError> {
        Self::load_with(opts, false)
    }

    /// Loads the model for candle-transformers' BERT forward even on the CPU: the reference that
    /// novapay's own CPU forward is tested against (and a fallback to compare with by hand).
    pub fn load_candle_reference(opts: EmbedderOptions) -> Result<Self, EmbedError> {
        Self::load_with(opts, true)
    }

    fn load_with(opts: EmbedderOptions, candle: bool) -> Result<Self, EmbedError> {
        let dir = &opts.dir;
        let file = |name: &str| -> Result<PathBuf, EmbedError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EmbedError::ModelNotFound(p))
            }
        };
        let bad = |path: &Path, reason: String| EmbedError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        let config_path = file("config.json")?;
        let config: BertConfig = read_json(&config_path)
            .map_err(|e| bad(&config_path, format!("not a BERT config.json: {e}")))?;
        let weights = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;

        let pooling = match read_json::<PoolingConfig>(&dir.join("1_Pooling/config.json")) {
            Ok(p) if p.pooling_mode_cls_token && !p.pooling_mode_mean_tokens => Pooling::Cls,
            Ok(p) if p.pooling_mode_mean_tokens => Pooling::Mean,
            Ok(_) => {
                return Err(bad(
                    &dir.join("1_Pooling/config.json"),
                    "only mean and CLS pooling are supported".into(),
                ))
            }
            // No pooling config: sentence-transformers defaults to mean pooling.
            Err(_) => Pooling::Mean,
        };
        let max_position = config.max_position_embeddings;
        let max_length = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|c| c.max_seq_length)
            .unwrap_or(512)
            .min(max_position);

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| bad(&tokenizer_path, format!("cannot read tokenizer.json: {e}")))?;
        // The shipped tokenizer.json often pads and truncates to a fixed 128; sentence-transformers
        // truncates at max_seq_length and pads to the batch's longest text.
        let mut padding = tokenizer.get_padding().cloned().unwrap_or(PaddingParams {
            pad_id: tokenizer.token_to_id("[PAD]").unwrap_or(0),
            ..Default::default()
        });
        padding.strategy = PaddingStrategy::BatchLongest;
        tokenizer.with_padding(Some(padding));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| bad(&tokenizer_path, e.to_string()))?;

        let device = opts.device.open()?;
        // SAFETY: the weights file is memory-mapped read-only; novapay never writes to model files.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| bad(&weights, format!("cannot read safetensors: {e}")))?;
        let fit =
            |e: candle_core::Error| bad(&weights, format!("weights do not fit config.json: {e}"));
        let encoder = if device.is_cpu() && !candle {
            Encoder::Cpu(BertEncoder::load(vb, &config, Some(&weights)).map_err(fit)?)
        } else {
            Encoder::Candle {
                model: BertModel::load(vb, &config).map_err(fit)?,
                device,
            }
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            encoder,
            tokenizer,
            pooling,
            dim: config.hidden_size,
            max_length,
            opts,
            name,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The most word pieces (including [CLS]/[SEP]) a text keeps; the rest is cut off.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// What queries are prefixed with ("query: " for e5 models, else nothing).
    pub fn query_prefix(&self) -> &str {
        &self.opts.query_prefix
    }

    /// What passages are prefixed with ("passage: " for e5 models, else nothing).
    pub fn passage_prefix(&self) -> &str {
        &self.opts.passage_prefix
    }

    /// Search queries, with the model's query prefix.
    pub fn embed_queries<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_with_prefix(&self.opts.query_prefix, texts)
    }

    /// Documents to be searched, with the model's passage prefix.
    pub fn embed_passages<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_with_prefix(&self.opts.passage_prefix, texts)
    }

    fn embed_with_prefix<S: AsRef<str>>(
        &self,
        prefix: &str,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let texts: Vec<String> = texts
            .iter()
            .map(|t| format!("{prefix}{}", t.as_ref()))
            .collect();
        self.embed(&texts)
    }

    /// Unit-length vectors for `texts`, in order. Texts are sorted by length before batching so that a
    /// batch pads to similar lengths, as sentence-transformers does.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().len()));
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.opts.batch_size.max(1)) {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i].as_ref()).collect();
            let vectors = self.embed_batch(&batch_texts)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Internal(format!("tokenizer: {e}")))?;
        match &self.encoder {
            Encoder::Cpu(encoder) => self.embed_unpadded(encoder, &encodings),
            Encoder::Candle { model, device } => self.embed_padded(model, device, &encodings),
        }
    }

    /// Each text at its own length (its padding dropped), whole texts spread over rayon's threads;
    /// a lone long text splits its matmuls over them instead.
    fn embed_unpadded(
        &self,
        encoder: &BertEncoder,
        encodings: &[tokenizers::Encoding],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        // A lone text (a customer's question) splits its matmuls over every thread; a batch puts one
        // text on each thread instead.
        let threads = rayon::current_num_threads();
        let inner_threads = match encodings {
            [_] => threads,
            _ => 1,
        };
        let pooling = self.pooling;
        let one = |e: &tokenizers::Encoding| -> Result<Vec<f32>, EmbedError> {
            let kept = |values: &[u32]| -> Vec<u32> {
                values
                    .iter()
                    .zip(e.get_attention_mask())
                    .filter(|pair| *pair.1 == 1)
                    .map(|pair| *pair.0)
                    .collect()
            };
            let (ids, type_ids) = (kept(e.get_ids()), kept(e.get_type_ids()));
            let hidden = encoder
                .forward(&ids, &type_ids, inner_threads)
                .map_err(EmbedError::Internal)?;
            Ok(pool_and_normalize(&hidden, encoder.hidden_size(), pooling))
        };
        encodings.par_iter().with_max_len(1).map(one).collect()
    }

    /// The candle-transformers path: one padded batch with its attention mask.
    fn embed_padded(
        &self,
        model: &BertModel,
        device: &Device,
        encodings: &[tokenizers::Encoding],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = encodings.len();
        let len = encodings.first().map(|e| e.len()).unwrap_or(0);
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().copied())
                .collect()
        };
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (n, len), device)?;
        let type_ids = Tensor::from_vec(flat(&|e| e.get_type_ids()), (n, len), device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (n, len), device)?;
        let hidden = model.forward(&ids, &type_ids, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let norms = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        let normalized = pooled.broadcast_div(&norms)?;
        Ok(normalized.to_vec2::<f32>()?)
    }
}

/// Mean (or CLS) of the `[len, dim]` hidden states, scaled to unit length.
fn pool_and_normalize(hidden: &[f32], dim: usize, pooling: Pooling) -> Vec<f32> {
    let rows = hidden.len() / dim.max(1);
    let mut v = vec![0f32; dim];
    match pooling {
        Pooling::Cls if hidden.len() >= dim => v.copy_from_slice(&hidden[..dim]),
        Pooling::Cls => {}
        Pooling::Mean => {
            for row in hidden.chunks_exact(dim) {
                v.iter_mut().zip(row).for_each(|(a, &b)| *a += b);
            }
            let n = (rows as f32).max(1e-9);
            v.iter_mut().for_each(|a| *a /= n);
        }
    }
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::ModelFamily;

    #[test]
    fn e5_models_get_their_prefixes_and_floor() {
        let e5 = ModelFamily::detect("intfloat/Multilingual-E5-small");
        assert_eq!(e5, ModelFamily::E5);
        assert_eq!(
            (e5.query_prefix(), e5.passage_prefix()),
            ("query: ", "passage: ")
        );
        assert_eq!(e5.similarity_floor(), Some(0.80));
        let minilm = ModelFamily::detect("sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(
            (minilm.query_prefix(), minilm.similarity_floor()),
            ("", None)
        );
    }
}
