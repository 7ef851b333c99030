//! The tile cache: the weights as `packed.rs` repacks them, written once to a file and memory-mapped by
//! later loads, which then neither repack nor touch fresh memory. The file's page-cache pages are the
//! tiles (no copy, no zeroing, 2 MB mappings on kernels with large page-cache folios), so a warm load
//! of Llama 3.2 3B is the header and the tokenizer; repacking into anonymous memory costs seconds on a
//! busy or virtualized host.
//!
//! Where: next to the GGUF (`<file>.novapay-tiles`) when its directory is writable, else in the
//! fallback directory (a user cache folder), under a name that includes a hash of the GGUF's path.
//! Disk cost: about the GGUF's size (the tiles are the GGUF's blocks rearranged; Q4_1 weights become
//! Q8_0, 1.7x larger).
//!
//! Safety against stale or damaged files, since a wrong tile is a wrong answer: the file is written
//! to a temporary name, synced and renamed (never seen half-written); on open the format version, the
//! GGUF's size, a SHA-256 of the GGUF's header (metadata and tensor table), of samples of every
//! tensor's data (start, middle, end: a model re-quantized or regenerated in place differs there) and
//! of the load options that shape the tiles must match, and every tile region must lie in the file
//! with the size its shape implies. Anything else is rebuilt from the GGUF, with a log line saying
//! why; the load never fails because of the cache. The modification time is deliberately not
//! compared: a models folder copied to an air-gapped server (`novapay download --build-tile-cache`)
//! keeps its cache valid.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use sha2::{Digest, Sha256};

use crate::engine::gguf::GgufFile;
use crate::engine::packed::PackedWeight;

const MAGIC: &[u8; 8] = b"NVPTILES";
/// Bump whenever a tile layout in `packed.rs` or this file's layout changes: older files are rebuilt.
const FORMAT_VERSION: u32 = 2;
/// Tile regions start at page boundaries.
const ALIGN: usize = 4096;
const SUFFIX: &str = "novapay-tiles";
/// Bounds on what a header may claim, so a corrupt file cannot make us allocate without limit.
const MAX_ENTRIES: usize = 1 << 16;
const MAX_NAME: usize = 1024;

/// Whether and where tiles are cached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TileCacheMode {
    /// Repack at every load (the library's default: nothing is written unless asked).
    #[default]
    Off,
    /// Next to the GGUF, or in `fallback_dir` when the GGUF's directory is read-only.
    Auto { fallback_dir: Option<PathBuf> },
    /// Always in this directory.
    Dir(PathBuf),
}

/// One matrix's tiles in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    offset: usize,
}

/// What identifies the GGUF (and options) a cache file was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    gguf_size: u64,
    digest: [u8; 32],
}

impl Fingerprint {
    /// `options` names the load options that change the tiles (e.g. the requantize mode).
    pub fn of(gguf: &GgufFile, options: &str) -> std::io::Result<Self> {
        let file = gguf.reader.get_ref();
        let meta = file.metadata()?;
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION.to_le_bytes());
        h.update(options.as_bytes());
        // The header: metadata (vocabulary included) and the tensor table (names, types, offsets).
        let header_len = usize::try_from(gguf.content.tensor_data_offset)
            .map_err(|_| std::io::Error::other("header too large"))?;
        let mut buf = vec![0u8; header_len.min(1 << 20)];
        let mut at = 0usize;
        while at < header_len {
            let n = buf.len().min(header_len - at);
            file.read_exact_at(&mut buf[..n], at as u64)?;
            h.update(&buf[..n]);
            at += n;
        }
        // Samples of every tensor's data (start, middle, end): two GGUFs with the same header and size
        // (a model re-quantized or regenerated in place) differ there.
        let mut names: Vec<&String> = gguf.content.tensor_infos.keys().collect();
        names.sort();
        let mut sample = [0u8; 256];
        for name in names {
            let info = &gguf.content.tensor_infos[name];
            let len = (info.shape.elem_count() / info.ggml_dtype.block_size()
                * info.ggml_dtype.type_size()) as u64;
            let start = gguf.content.tensor_data_offset + info.offset;
            let n = len.min(sample.len() as u64);
            for at in [start, start + (len - n) / 2, start + len - n] {
                file.read_exact_at(&mut sample[..n as usize], at)?;
                h.update(name.as_bytes());
                h.update(&sample[..n as usize]);
            }
        }
        Ok(Self {
            gguf_size: meta.len(),
            digest: h.finalize().into(),
        })
    }
}

/// A cache file that matched its GGUF, mapped read-only.
pub struct TileCache {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    entries: HashMap<String, Entry>,
}

impl TileCache {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tiles of `name` in place, when the file has them with this type and shape.
    pub fn weight(
        &self,
        name: &str,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
    ) -> Option<PackedWeight> {
        let e = self.entries.get(name)?;
        if (e.dtype, e.rows, e.cols) != (dtype, rows, cols) {
            return None;
        }
        PackedWeight::from_mapped(dtype, rows, cols, self.map.clone(), e.offset)
    }

    /// Opens the cache file at `path` if it exists and matches `fp`; `Err` says why it cannot be used
    /// (missing, stale, corrupt), for the log line before it is rebuilt.
    pub fn open(path: &Path, fp: &Fingerprint) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        // SAFETY: the file is only ever replaced by rename, never written in place, so the mapped
        // inode does not change under us; regions are bounds-checked below and in `from_mapped`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot map: {e}"))?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let entries = parse(&map, fp)?;
        Ok(Self {
            path: path.to_path_buf(),
            map: Arc::new(map),
            entries,
        })
    }
}

/// Little-endian reader over the header that fails instead of panicking on a short file.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("truncated header")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "value out of range".to_string())
    }
}

fn dtype_id(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::Q4K => 12,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8_0 => 8,
        // Nothing else is packed; an unknown id is refused on read.
        _ => u32::MAX,
    }
}

fn dtype_from_id(id: u32) -> Option<GgmlDType> {
    match id {
        12 => Some(GgmlDType::Q4K),
        14 => Some(GgmlDType::Q6K),
        8 => Some(GgmlDType::Q8_0),
        _ => None,
    }
}

fn parse(bytes: &[u8], fp: &Fingerprint) -> Result<HashMap<String, Entry>, String> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(MAGIC.len())? != MAGIC {
        return Err("not a novapay tile cache".into());
    }
    let version = c.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build writes {FORMAT_VERSION}"
        ));
    }
    let found = Fingerprint {
        gguf_size: c.u64()?,
        digest: c.take(32)?.try_into().expect("32 bytes"),
    };
    if found != *fp {
        return Err("built from another GGUF, or the GGUF or the load options changed".into());
    }
    let n = c.u32()? as usize;
    if n > MAX_ENTRIES {
        return Err(format!("{n} entries"));
    }
    let mut entries = HashMap::with_capacity(n);
    for _ in 0..n {
        let name_len = c.u16()? as usize;
        if name_len > MAX_NAME {
            return Err("tensor name too long".into());
        }
        let name = std::str::from_utf8(c.take(name_len)?)
            .map_err(|_| "tensor name is not UTF-8")?
            .to_string();
        let id = c.u32()?;
        let dtype = dtype_from_id(id).ok_or_else(|| format!("`{name}` has tile type {id}"))?;
        let (rows, cols, offset, len) = (c.usize()?, c.usize()?, c.usize()?, c.usize()?);
        let in_bounds = offset
            .checked_add(len)
            .is_some_and(|end| end <= bytes.len());
        let expected = PackedWeight::covers(dtype, &[rows, cols])
            .then(|| PackedWeight::tile_bytes_len(dtype, rows, cols))
            .flatten();
        if !in_bounds || !offset.is_multiple_of(ALIGN) || expected != Some(len) {
            return Err(format!(
                "`{name}`: region {offset}+{len} of a {}-byte file does not hold a {dtype:?} \
                 {rows}x{cols} matrix (truncated or corrupt)",
                bytes.len()
            ));
        }
        let entry = Entry {
            dtype,
            rows,
            cols,
            offset,
        };
        if entries.insert(name.clone(), entry).is_some() {
            return Err(format!("`{name}` listed twice"));
        }
    }
    Ok(entries)
}

/// Where the cache file for `gguf` is (or would be) in `mode`: the first candidate that exists, else
/// the first one whose directory is writable.
pub fn locate(gguf: &Path, mode: &TileCacheMode) -> Vec<PathBuf> {
    let name = gguf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.gguf".into());
    let in_dir = |dir: &Path| {
        // Several GGUFs of the same file name can share one cache directory: the name carries a hash
        // of the GGUF's full path.
        let full = std::fs::canonicalize(gguf).unwrap_or_else(|_| gguf.to_path_buf());
        let h = Sha256::digest(full.to_string_lossy().as_bytes());
        let tag: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("{name}.{tag}.{SUFFIX}"))
    };
    match mode {
        TileCacheMode::Off => Vec::new(),
        TileCacheMode::Dir(dir) => vec![in_dir(dir)],
        TileCacheMode::Auto { fallback_dir } => {
            let next_to = gguf.with_file_name(format!("{name}.{SUFFIX}"));
            std::iter::once(next_to)
                .chain(fallback_dir.as_deref().map(in_dir))
                .collect()
        }
    }
}

/// Writes `weights` as the cache file at the first of `candidates` that can be written (temporary
/// file, sync, rename); returns the path written.
pub fn write(
    candidates: &[PathBuf],
    fp: &Fingerprint,
    weights: &[(String, Arc<PackedWeight>)],
) -> Result<PathBuf, String> {
    let mut errors = Vec::new();
    for path in candidates {
        match write_at(path, fp, weights) {
            Ok(()) => return Ok(path.clone()),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    Err(errors.join("; "))
}

fn header(fp: &Fingerprint, weights: &[(String, Arc<PackedWeight>)]) -> std::io::Result<Vec<u8>> {
    let entry_bytes: usize = weights.iter().map(|(n, _)| 2 + n.len() + 4 + 32).sum();
    let header_len = (MAGIC.len() + 4 + 8 + 32 + 4 + entry_bytes).next_multiple_of(ALIGN);
    let mut h = Vec::with_capacity(header_len);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&fp.gguf_size.to_le_bytes());
    h.extend_from_slice(&fp.digest);
    h.extend_from_slice(&(weights.len() as u32).to_le_bytes());
    let mut offset = header_len;
    for (name, w) in weights {
        if name.len() > MAX_NAME {
            return Err(std::io::Error::other(format!(
                "tensor name `{name}` too long"
            )));
        }
        let len = w.tile_bytes().len();
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&dtype_id(w.dtype()).to_le_bytes());
        for v in [w.rows(), w.cols(), offset, len] {
            h.extend_from_slice(&(v as u64).to_le_bytes());
        }
        offset += len.next_multiple_of(ALIGN);
    }
    h.resize(header_len, 0);
    Ok(h)
}

fn write_at(
    path: &Path,
    fp: &Fingerprint,
    weights: &[(String, Arc<PackedWeight>)],
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = ChunkedWriter::new(File::create(&tmp)?);
        f.write(&header(fp, weights)?)?;
        let pad = [0u8; ALIGN];
        for (_, w) in weights {
            let bytes = w.tile_bytes();
            f.write(bytes)?;
            f.write(&pad[..bytes.len().next_multiple_of(ALIGN) - bytes.len()])?;
        }
        let f = f.finish()?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes in whole 2 MB chunks at 2 MB-aligned offsets: the page cache then holds the file in 2 MB
/// folios, which a read-only map of it gets as 2 MB pages (measured: a decode step streams every
/// tile once, and a tile cache written tensor by tensor had ~20% of it in 4 KB pages, decode ~5%
/// slower).
struct ChunkedWriter {
    file: File,
    buf: Vec<u8>,
}

impl ChunkedWriter {
    const CHUNK: usize = 2 << 20;

    fn new(file: File) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(Self::CHUNK),
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(Self::CHUNK - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == Self::CHUNK {
                self.file.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<File> {
        self.file.write_all(&self.buf)?;
        Ok(self.file)
    }
}
