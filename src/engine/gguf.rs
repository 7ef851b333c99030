//! Opening GGUF files with errors an operator can act on: a missing file, a file that is not GGUF, or a
//! truncated download each get their own message instead of a decoder panic or an opaque I/O error.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use super::EngineError;

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
            bad(format!(
                "unreadable GGUF header (truncated or corrupt download?): {e}"
            ))
        })?;
        // The header lists every tensor with its offset: a short file is a truncated download, caught
        // here rather than as a read error halfway through loading.
        let needed = content
            .tensor_infos
            .values()
            .map(|t| {
                let elems = t.shape.elem_count();
                let block = t.ggml_dtype.block_size();
                content.tensor_data_offset
                    + t.offset
                    + (elems / block * t.ggml_dtype.type_size()) as u64
            })
            .max()
            .unwrap_or(content.tensor_data_offset);
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
