//! Opening GGUF files with errors an operator can act on: a missing file, a file that is not GGUF, or a
//! truncated download each get their own message instead of a decoder panic or an opaque I/O error.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use crate::engine::EngineError;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// A parsed GGUF header plus the open file its tensors are read from.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        let bad = |reason: String| EngineError::BadModel {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::ModelNotFound(path.to_path_buf())
            } else {
                bad(format!("cannot open: {e}"))
            }
        })?;
        let size = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut magic = [0u8; 4];
        if size < 4 || file.read_exact(&mut magic).is_err() || &magic != GGUF_MAGIC {
            return Err(bad(
                "not a GGUF file (the first bytes are not \"GGUF\"); pass a .gguf model".into(),
            ));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| bad(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| {
            let e = e.to_string();
            if e.contains("unknown dtype") {
                // candle names the type number only; find the tensor so the operator knows what to fix.
                let tensor = reader
                    .seek(SeekFrom::Start(0))
                    .ok()
                    .and_then(|_| header::first_unknown_type(&mut reader, size));
                if let Some((name, ty)) = tensor {
                    return bad(format!(
                        "tensor `{name}` has GGML type {ty}, which novapay cannot read (supported: F32, \
                         F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); re-quantize the model, \
                         e.g. to Q4_K_M"
                    ));
                }
            }
            bad(format!(
                "unreadable GGUF header (truncated or corrupt download?): {e}"
            ))
        })?;
        // The header lists every tensor with its offset: a short file is a truncated download, caught
        // here rather than as a read error halfway through loading. Sizes are checked arithmetic: a
        // corrupt header must give an error, not an overflow.
        let mut needed = content.tensor_data_offset;
        for (name, t) in &content.tensor_infos {
            let block = t.ggml_dtype.block_size();
            let dims = t.shape.dims();
            let row = dims.last().copied().unwrap_or(1);
            if !row.is_multiple_of(block) {
                return Err(bad(format!(
                    "tensor `{name}` has rows of {row} values, not a multiple of its {:?} block \
                     size {block} (corrupt file?)",
                    t.ggml_dtype
                )));
            }
            let end = dims
                .iter()
                .try_fold(1usize, |a, d| a.checked_mul(*d))
                .and_then(|elems| (elems / block).checked_mul(t.ggml_dtype.type_size()))
                .and_then(|bytes| {
                    content
                        .tensor_data_offset
                        .checked_add(t.offset)?
                        .checked_add(bytes as u64)
                });
            match end {
                Some(end) => needed = needed.max(end),
                None => {
                    return Err(bad(format!(
                        "tensor `{name}` has an impossible size {dims:?} (corrupt file?)"
                    )))
                }
            }
        }
        if needed > size {
            return Err(bad(format!(
                "truncated: the header needs {needed} bytes, the file has {size}; download it again"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// Shape (candle order: rows last) and type of a tensor, from the header alone.
    pub fn tensor_info(&self, name: &str) -> Option<(&[usize], candle_core::quantized::GgmlDType)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| (t.shape.dims(), t.ggml_dtype))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(value_as_u64).map(|v| v as u32)
    }

    pub fn get_f32(&self, key: &str) -> Option<f32> {
        match self.get(key)? {
            Value::F32(v) => Some(*v),
            Value::F64(v) => Some(*v as f32),
            other => value_as_u64(other).map(|v| v as f32),
        }
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }

    pub fn require_u32(&self, key: &str) -> Result<u32, EngineError> {
        self.get_u32(key).ok_or_else(|| self.missing(key))
    }

    pub fn missing(&self, key: &str) -> EngineError {
        EngineError::BadModel {
            path: self.path.clone(),
            reason: format!("GGUF metadata has no `{key}`"),
        }
    }

    pub fn string_array(&self, key: &str) -> Result<Vec<String>, EngineError> {
        let arr = self.get(key).ok_or_else(|| self.missing(key))?;
        let arr = arr.to_vec().map_err(|_| self.missing(key))?;
        arr.iter()
            .map(|v| v.to_string().cloned().map_err(|_| self.missing(key)))
            .collect()
    }

    /// A numeric array as f32 (SentencePiece scores).
    pub fn f32_array(&self, key: &str) -> Option<Vec<f32>> {
        let arr = self.get(key)?.to_vec().ok()?;
        arr.iter()
            .map(|v| match v {
                Value::F32(x) => Some(*x),
                Value::F64(x) => Some(*x as f32),
                other => value_as_u64(other)
                    .map(|x| x as f32)
                    .or_else(|| value_as_i64(other).map(|x| x as f32)),
            })
            .collect()
    }

    pub fn int_array(&self, key: &str) -> Option<Vec<i64>> {
        let arr = self.get(key)?.to_vec().ok()?;
        arr.iter()
            .map(|v| {
                value_as_u64(v)
                    .map(|x| x as i64)
                    .or_else(|| value_as_i64(v))
            })
            .collect()
    }
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) if *x >= 0 => Some(*x as u64),
        Value::I16(x) if *x >= 0 => Some(*x as u64),
        Value::I32(x) if *x >= 0 => Some(*x as u64),
        Value::I64(x) if *x >= 0 => Some(*x as u64),
        _ => None,
    }
}

fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I8(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::I32(x) => Some(*x as i64),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

/// A minimal walk over the GGUF header (v2/v3), used only to name a tensor candle refused.
mod header {
    use std::io::Read;

    fn u32le(r: &mut impl Read) -> Option<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn u64le(r: &mut impl Read) -> Option<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn skip(r: &mut impl Read, n: u64, limit: u64) -> Option<()> {
        if n > limit {
            return None;
        }
        let copied = std::io::copy(&mut r.take(n), &mut std::io::sink()).ok()?;
        (copied == n).then_some(())
    }

    fn string(r: &mut impl Read, limit: u64) -> Option<String> {
        let n = u64le(r)?;
        if n > limit {
            return None;
        }
        let mut b = vec![0u8; n as usize];
        r.read_exact(&mut b).ok()?;
        Some(String::from_utf8_lossy(&b).into_owned())
    }

    fn skip_value(r: &mut impl Read, ty: u32, limit: u64, depth: usize) -> Option<()> {
        match ty {
            0 | 1 | 7 => skip(r, 1, limit),
            2 | 3 => skip(r, 2, limit),
            4..=6 => skip(r, 4, limit),
            10..=12 => skip(r, 8, limit),
            8 => {
                let n = u64le(r)?;
                skip(r, n, limit)
            }
            9 if depth < 4 => {
                let inner = u32le(r)?;
                let n = u64le(r)?;
                if n > limit {
                    return None;
                }
                (0..n).try_for_each(|_| skip_value(r, inner, limit, depth + 1))
            }
            _ => None,
        }
    }

    /// The first tensor whose GGML type candle does not know: (name, type number).
    pub fn first_unknown_type(r: &mut impl Read, limit: u64) -> Option<(String, u32)> {
        const KNOWN: &[u32] = &[0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];
        let mut r = std::io::BufReader::new(r);
        let _magic = u32le(&mut r)?;
        let version = u32le(&mut r)?;
        if version < 2 {
            return None;
        }
        let n_tensors = u64le(&mut r)?;
        let n_kv = u64le(&mut r)?;
        for _ in 0..n_kv {
            string(&mut r, limit)?;
            let ty = u32le(&mut r)?;
            skip_value(&mut r, ty, limit, 0)?;
        }
        for _ in 0..n_tensors {
            let name = string(&mut r, limit)?;
            let n_dims = u32le(&mut r)?;
            skip(&mut r, 8 * n_dims as u64, limit)?;
            let ty = u32le(&mut r)?;
            skip(&mut r, 8, limit)?;
            if !KNOWN.contains(&ty) {
                return Some((name, ty));
            }
        }
        None
    }
}
