//! Q4_K, Q6_K and Q8_0 weight matrices repacked once, at load, for AVX-512 VNNI integer dot products, and the
//! matrix products over them (decode mat-vec and prefill mat-mat alike).
//!
//! Why this is ours and not candle's: candle 0.11's x86 kernels (`repack_x86.rs`) repack the same way,
//! but keep their tiles in a private cache *next to* the GGUF's blocks, and their tiles are larger than
//! the blocks (scales widened to f32, Q6_K's 6-bit values to a byte each): 1.33x for Q4_K, 1.52x for
//! Q6_K. Llama 3.2 3B Q4_K_M (2.0 GB) thus held 4.75 GB. These tiles *replace* the blocks and are their
//! size (Q6_K exactly, Q4_K +2.8%), so the weights are held once. No crate offers quantized kernels that
//! own their weights in a layout of our choosing.
//!
//! Layout: 16 weight rows per tile, one 256-value super-block wide, arranged so that one 512-bit load
//! holds 4 consecutive values of each of the 16 rows: `vpdpbusd` (unsigned weight byte x signed
//! activation byte) then yields 16 output columns at once. Activations are quantized per 256 values to
//! i8 (ggml's Q8_K, computed exactly as candle and llama.cpp do; per 32 values like ggml's Q8_0 for
//! Q8_0 weights, which also fit widths that are not a multiple of 256, e.g. SmolLM2's 576), and the
//! minimum / offset terms are corrected through the activations' block sums, as in ggml.
//!
//! `PackedWeight::matmul_reference` is the scalar definition every kernel is tested against.
//!
//! One file over the size the rest of the crate keeps, on purpose: the tile layouts, the packing of each
//! weight type, the activation quantization and the AVX-512 kernels that read them are one data format
//! seen from both sides, and the tests (a tenth of it) check every kernel against the scalar reference.

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use super::parallel::{parallel_for, parallel_for_long, SyncPtr};

/// Weight rows per tile: one 512-bit register of 16 i32/f32 lanes.
const TILE_ROWS: usize = 16;
/// Values per K-quant super-block.
const QK_K: usize = 256;
const Q4K_BLOCK_BYTES: usize = 144;
const Q6K_BLOCK_BYTES: usize = 210;
/// Values per Q8_0 block.
const QK8_0: usize = 32;
const Q8_0_BLOCK_BYTES: usize = 34;
/// Values and bytes per Q4_1 block (read at load only, requantized to Q8_0 tiles).
const QK4_1: usize = 32;
const Q4_1_BLOCK_BYTES: usize = 20;
/// Activation rows multiplied against a weight tile while it is in registers / L1.
const MAX_ROWS: usize = 4;

/// 16 rows x 256 values of Q4_K: 2,368 bytes (the GGUF's 16 blocks: 2,304).
#[repr(C)]
#[derive(Clone, Copy)]
struct TileQ4K {
    /// Per row: super-block scale and minimum scale (f16 bits).
    d: [u16; TILE_ROWS],
    dmin: [u16; TILE_ROWS],
    /// Per 32-value sub-block, per row: the 6-bit scale and minimum, unpacked.
    scales: [[u8; TILE_ROWS]; 8],
    mins: [[u8; TILE_ROWS]; 8],
    /// [8-value group (32)][row (16)][4 bytes]; byte j = q[8g + j] | q[8g + j + 4] << 4.
    qs: [u8; QK_K / 8 * TILE_ROWS * 4],
}

/// 16 rows x 256 values of Q6_K: 3,360 bytes, exactly the GGUF's 16 blocks.
#[repr(C)]
#[derive(Clone, Copy)]
struct TileQ6K {
    d: [u16; TILE_ROWS],
    /// Per 16-value sub-block, per row.
    scales: [[i8; TILE_ROWS]; 16],
    /// Low 4 bits: [pair of 4-value groups (32)][row][4 bytes]; low nibble = group 2p, high = 2p + 1.
    ql: [u8; QK_K / 8 * TILE_ROWS * 4],
    /// High 2 bits: [quad of 4-value groups (16)][row][4 bytes]; bits 2t..2t+2 = group 4q + t.
    qh: [u8; QK_K / 16 * TILE_ROWS * 4],
}

/// 16 rows x 32 values of Q8_0, stored +128 as u8: 544 bytes, exactly the GGUF's 16 blocks.
#[repr(C)]
#[derive(Clone, Copy)]
struct TileQ8_0 {
    d: [u16; TILE_ROWS],
    /// [4-value group (8)][row (16)][4 bytes], each weight + 128.
    qs: [u8; QK8_0 * TILE_ROWS],
}

impl TileQ8_0 {
    const ZERO: Self = Self {
        d: [0; TILE_ROWS],
        qs: [0; QK8_0 * TILE_ROWS],
    };
}

const _: () = assert!(std::mem::size_of::<TileQ8_0>() == 16 * Q8_0_BLOCK_BYTES);
const _: () = assert!(std::mem::size_of::<TileQ4K>() == 2368);
const _: () = assert!(std::mem::size_of::<TileQ6K>() == 16 * Q6K_BLOCK_BYTES);

impl TileQ4K {
    const ZERO: Self = Self {
        d: [0; TILE_ROWS],
        dmin: [0; TILE_ROWS],
        scales: [[0; TILE_ROWS]; 8],
        mins: [[0; TILE_ROWS]; 8],
        qs: [0; QK_K / 8 * TILE_ROWS * 4],
    };
}

impl TileQ6K {
    const ZERO: Self = Self {
        d: [0; TILE_ROWS],
        scales: [[0; TILE_ROWS]; 16],
        ql: [0; QK_K / 8 * TILE_ROWS * 4],
        qh: [0; QK_K / 16 * TILE_ROWS * 4],
    };
}

enum Tiles {
    Q4K(TileBuf<TileQ4K>),
    Q6K(TileBuf<TileQ6K>),
    Q8_0(TileBuf<TileQ8_0>),
}

/// Tiles in an anonymous memory map that asks for transparent huge pages (Linux `madvise`): a decode
/// step streams every tile once, and with 4 KB pages that is a TLB miss every 4 KB (500,000 per
/// Llama 3.2 3B token) and 500,000 page faults at load. A kernel that refuses keeps 4 KB pages.
struct TileBuf<T> {
    mem: TileMem,
    len: usize,
    _tiles: std::marker::PhantomData<T>,
}

/// Where tiles live: repacked at load into anonymous memory, or read in place from a tile cache file
/// (`tile_cache.rs`) mapped read-only, whose page-cache pages are shared with no copy and no zeroing.
enum TileMem {
    Owned(memmap2::MmapMut),
    Mapped {
        map: std::sync::Arc<memmap2::Mmap>,
        offset: usize,
    },
}

impl<T: Copy> TileBuf<T> {
    /// `len` tiles of zero bytes (every tile type here is plain integers: zero is a valid tile).
    fn zeroed(len: usize) -> std::io::Result<Self> {
        let map = memmap2::MmapMut::map_anon((len * std::mem::size_of::<T>()).max(1))?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Self {
            mem: TileMem::Owned(map),
            len,
            _tiles: std::marker::PhantomData,
        })
    }

    /// `len` tiles at `offset` of a file map; `None` when they do not fit in it or are misaligned.
    fn mapped(map: std::sync::Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<T>());
        (end <= map.len() && aligned).then_some(Self {
            mem: TileMem::Mapped { map, offset },
            len,
            _tiles: std::marker::PhantomData,
        })
    }

    /// Only tiles being packed are written, always into their own anonymous map.
    fn as_mut_ptr(&mut self) -> *mut T {
        match &mut self.mem {
            TileMem::Owned(map) => map.as_mut_ptr() as *mut T,
            TileMem::Mapped { .. } => unreachable!("mapped tiles are never written"),
        }
    }

    fn bytes(&self) -> &[u8] {
        let ptr = match &self.mem {
            TileMem::Owned(map) => map.as_ptr(),
            TileMem::Mapped { map, offset } => map[*offset..].as_ptr(),
        };
        // SAFETY: `len` tiles lie in the map from `ptr` (checked in `mapped`, allocated in `zeroed`).
        unsafe { std::slice::from_raw_parts(ptr, self.len * std::mem::size_of::<T>()) }
    }
}

impl<T: Copy> std::ops::Deref for TileBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the map holds `len` tiles from an address aligned for `T` (page-aligned anonymous
        // maps; checked for file regions), and tiles are plain integers, valid for any bytes.
        unsafe { std::slice::from_raw_parts(self.bytes().as_ptr() as *const T, self.len) }
    }
}

/// One activation row's 256 values as i8 with one scale, plus sums of each 16 values (ggml's Q8_K).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Q8K {
    d: f32,
    qs: [i8; QK_K],
    bsums: [i16; QK_K / 16],
}

impl Q8K {
    const ZERO: Self = Self {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };

    /// ggml's `quantize_row_q8_K`, as candle computes it: the value of largest magnitude maps to -127.
    fn quantize(xs: &[f32], out: &mut Self) {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX-512 (and so SSE4.1).
            return unsafe { Self::quantize_avx512(xs, out) };
        }
        Self::quantize_portable(xs, out)
    }

    /// The same code compiled with SSE4.1 / AVX-512: `round` becomes an instruction instead of a libm
    /// call per value (~0.5 M calls per Llama 3.2 3B token).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1,avx2,avx512f,avx512bw")]
    unsafe fn quantize_avx512(xs: &[f32], out: &mut Self) {
        Self::quantize_portable(xs, out)
    }

    #[inline(always)]
    fn quantize_portable(xs: &[f32], out: &mut Self) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &x in xs {
            if amax < x.abs() {
                amax = x.abs();
                max = x;
            }
        }
        if amax == 0.0 {
            *out = Self::ZERO;
            return;
        }
        let iscale = -127f32 / max;
        for (q, x) in out.qs.iter_mut().zip(xs) {
            *q = (iscale * x).round().clamp(-128.0, 127.0) as i8;
        }
        for (j, s) in out.bsums.iter_mut().enumerate() {
            *s = out.qs[j * 16..(j + 1) * 16]
                .iter()
                .map(|q| *q as i32)
                .sum::<i32>() as i16;
        }
        out.d = 1.0 / iscale;
    }
}

/// 32 activation values as i8 with one scale and their sum (ggml's Q8_0, plus the sum that corrects
/// the weights' +128 offset).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Q8B {
    d: f32,
    sum: i32,
    qs: [i8; QK8_0],
}

impl Q8B {
    const ZERO: Self = Self {
        d: 0.0,
        sum: 0,
        qs: [0; QK8_0],
    };

    /// ggml's `quantize_row_q8_0`: scale amax / 127, stored (and so multiplied) as f16.
    fn quantize(xs: &[f32], out: &mut Self) {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX-512 (and so SSE4.1).
            return unsafe { Self::quantize_avx512(xs, out) };
        }
        Self::quantize_portable(xs, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1,avx2,avx512f,avx512bw")]
    unsafe fn quantize_avx512(xs: &[f32], out: &mut Self) {
        Self::quantize_portable(xs, out)
    }

    #[inline(always)]
    fn quantize_portable(xs: &[f32], out: &mut Self) {
        let amax = xs.iter().fold(0f32, |a, x| a.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (q, x) in out.qs.iter_mut().zip(xs) {
            *q = (x * id).round() as i8;
        }
        out.sum = out.qs.iter().map(|q| *q as i32).sum();
        out.d = f16::from_f32(d).to_f32();
    }
}

/// Activation rows quantized for whichever weight types a call multiplies.
#[derive(Default)]
pub struct Activations {
    k: Vec<Q8K>,
    b32: Vec<Q8B>,
}

/// Quantizes `m` rows of `k` values into `block`-value blocks, in parallel when there are several rows.
fn quantize_blocks<Q: Copy + Send + Sync>(
    x: &[f32],
    m: usize,
    k: usize,
    block: usize,
    zero: Q,
    quantize: fn(&[f32], &mut Q),
) -> Vec<Q> {
    let kb = k / block;
    let mut out = vec![zero; m * kb];
    if m == 1 {
        for (b, q) in out.iter_mut().enumerate() {
            quantize(&x[b * block..(b + 1) * block], q);
        }
        return out;
    }
    let dst = SyncPtr(out.as_mut_ptr());
    parallel_for_long(m, |rows| {
        for r in rows {
            for b in 0..kb {
                // SAFETY: each (row, block) slot is written by exactly one worker.
                let q = unsafe { &mut *dst.get().add(r * kb + b) };
                quantize(&x[r * k + b * block..r * k + (b + 1) * block], q);
            }
        }
    });
    out
}

impl Activations {
    /// `m` rows of `k` values, quantized as the weights of `types` need.
    fn new(x: &[f32], m: usize, k: usize, types: impl Iterator<Item = GgmlDType> + Clone) -> Self {
        let needs = |t: GgmlDType| types.clone().any(|d| d == t);
        let mut a = Self::default();
        if needs(GgmlDType::Q4K) || needs(GgmlDType::Q6K) {
            a.k = quantize_blocks(x, m, k, QK_K, Q8K::ZERO, Q8K::quantize);
        }
        if needs(GgmlDType::Q8_0) {
            a.b32 = quantize_blocks(x, m, k, QK8_0, Q8B::ZERO, Q8B::quantize);
        }
        a
    }
}

/// True when this CPU runs the kernels (AVX-512 F/BW and VNNI), checked once.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A (rows, cols) weight matrix, multiplied as `x @ W^T`, held only in its repacked form.
pub struct PackedWeight {
    tiles: Tiles,
    rows: usize,
    cols: usize,
}

impl PackedWeight {
    /// Whether our kernels take a `dtype` matrix of these dims (candle order: rows, cols): Q4_K or
    /// Q6_K with columns a multiple of 256, Q8_0 of 32; rows a multiple of 16.
    pub fn covers(dtype: GgmlDType, dims: &[usize]) -> bool {
        let Some((block, _)) = layout(dtype) else {
            return false;
        };
        matches!(dims, [r, c] if *r > 0 && r.is_multiple_of(TILE_ROWS)
            && *c > 0 && c.is_multiple_of(block))
    }

    /// Repacks a matrix from its GGUF blocks (`data`: row after row, e.g. the tensor's bytes in a
    /// memory map of the file). Needs `covers`.
    pub fn from_bytes(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> std::io::Result<Self> {
        if !Self::covers(dtype, &[rows, cols]) {
            return Err(std::io::Error::other(format!(
                "{dtype:?} {rows}x{cols} is not covered by the packed kernels"
            )));
        }
        let src = layout(dtype)
            .ok_or_else(|| std::io::Error::other(format!("{dtype:?} is not packed")))?;
        let tiles = match dtype {
            GgmlDType::Q4K => Tiles::Q4K(pack(data, rows, cols, src, TileQ4K::ZERO, pack_q4k_row)?),
            GgmlDType::Q6K => Tiles::Q6K(pack(data, rows, cols, src, TileQ6K::ZERO, pack_q6k_row)?),
            _ => Tiles::Q8_0(pack(data, rows, cols, src, TileQ8_0::ZERO, pack_q8_0_row)?),
        };
        Ok(Self { tiles, rows, cols })
    }

    /// Whether `from_q4_1_bytes` takes a Q4_1 matrix of these dims: rows a multiple of 16, columns of 32.
    pub fn covers_q4_1(dims: &[usize]) -> bool {
        matches!(dims, [r, c] if *r > 0 && r.is_multiple_of(TILE_ROWS)
            && *c > 0 && c.is_multiple_of(QK8_0))
    }

    /// A Q4_1 matrix (the GGUF's blocks, row after row) requantized to Q8_0 tiles in one pass: the
    /// same values, bit for bit, as candle's `dequantize` then `QTensor::quantize(.., Q8_0)` then
    /// `from_bytes`, without the f32 copy of the matrix and the two intermediate buffers (most of
    /// SmolLM2's load time). Needs `covers_q4_1`.
    pub fn from_q4_1_bytes(rows: usize, cols: usize, data: &[u8]) -> std::io::Result<Self> {
        if !Self::covers_q4_1(&[rows, cols]) {
            return Err(std::io::Error::other(format!(
                "Q4_1 {rows}x{cols} is not covered by the packed kernels"
            )));
        }
        let tiles = pack(
            data,
            rows,
            cols,
            (QK4_1, Q4_1_BLOCK_BYTES),
            TileQ8_0::ZERO,
            pack_q4_1_row_as_q8_0,
        )?;
        Ok(Self {
            tiles: Tiles::Q8_0(tiles),
            rows,
            cols,
        })
    }

    /// The tiles as bytes, for the tile cache (`tile_cache.rs`); `from_mapped` reads them back.
    pub fn tile_bytes(&self) -> &[u8] {
        match &self.tiles {
            Tiles::Q4K(t) => t.bytes(),
            Tiles::Q6K(t) => t.bytes(),
            Tiles::Q8_0(t) => t.bytes(),
        }
    }

    /// Size in bytes of the tiles of a `dtype` (rows, cols) matrix (`covers` must hold).
    pub fn tile_bytes_len(dtype: GgmlDType, rows: usize, cols: usize) -> Option<usize> {
        let (block, _) = layout(dtype)?;
        let tiles = (rows / TILE_ROWS).checked_mul(cols / block)?;
        let size = match dtype {
            GgmlDType::Q4K => std::mem::size_of::<TileQ4K>(),
            GgmlDType::Q6K => std::mem::size_of::<TileQ6K>(),
            _ => std::mem::size_of::<TileQ8_0>(),
        };
        tiles.checked_mul(size)
    }

    /// A matrix whose tiles (`tile_bytes` of an earlier load) lie at `offset` of a read-only file map,
    /// used in place. `None` when the type or shape is not ours, or the region is out of bounds or
    /// misaligned: the caller repacks from the GGUF instead.
    pub fn from_mapped(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        map: std::sync::Arc<memmap2::Mmap>,
        offset: usize,
    ) -> Option<Self> {
        if !Self::covers(dtype, &[rows, cols]) {
            return None;
        }
        let n = Self::tile_bytes_len(dtype, rows, cols)?;
        let tiles = match dtype {
            GgmlDType::Q4K => Tiles::Q4K(TileBuf::mapped(
                map,
                offset,
                n / std::mem::size_of::<TileQ4K>(),
            )?),
            GgmlDType::Q6K => Tiles::Q6K(TileBuf::mapped(
                map,
                offset,
                n / std::mem::size_of::<TileQ6K>(),
            )?),
            _ => Tiles::Q8_0(TileBuf::mapped(
                map,
                offset,
                n / std::mem::size_of::<TileQ8_0>(),
            )?),
        };
        Some(Self { tiles, rows, cols })
    }

    /// Repacks a candle tensor; `None` when `covers` does not hold (the caller keeps candle's kernels).
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        let dims = t.shape().dims();
        if !Self::covers(t.dtype(), dims) {
            return Ok(None);
        }
        let data = t.data()?;
        Self::from_bytes(t.dtype(), dims[0], dims[1], &data)
            .map(Some)
            .map_err(|e| candle_core::Error::Msg(format!("cannot repack: {e}")))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> GgmlDType {
        match self.tiles {
            Tiles::Q4K(_) => GgmlDType::Q4K,
            Tiles::Q6K(_) => GgmlDType::Q6K,
            Tiles::Q8_0(_) => GgmlDType::Q8_0,
        }
    }

    /// Bytes held (and read once per mat-vec).
    pub fn size_in_bytes(&self) -> usize {
        match &self.tiles {
            Tiles::Q4K(t) => std::mem::size_of_val(&t[..]),
            Tiles::Q6K(t) => std::mem::size_of_val(&t[..]),
            Tiles::Q8_0(t) => std::mem::size_of_val(&t[..]),
        }
    }

    /// Values per block of this type.
    fn block(&self) -> usize {
        match self.tiles {
            Tiles::Q8_0(_) => QK8_0,
            _ => QK_K,
        }
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / self.block()
    }

    /// Row `row` as f32, bit-identical to candle's dequantization of the original blocks.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let kb = self.blocks_per_row();
        let (t, r) = (row / TILE_ROWS, row % TILE_ROWS);
        let block = self.block();
        for b in 0..kb {
            let y = &mut out[b * block..(b + 1) * block];
            match &self.tiles {
                Tiles::Q4K(tiles) => {
                    let tile = &tiles[t * kb + b];
                    let d = f16::from_bits(tile.d[r]).to_f32();
                    let dmin = f16::from_bits(tile.dmin[r]).to_f32();
                    for (v, y) in y.iter_mut().enumerate() {
                        let sub = v / 32;
                        let d1 = d * tile.scales[sub][r] as f32;
                        let m1 = dmin * tile.mins[sub][r] as f32;
                        *y = d1 * q4k_value(tile, r, v) as f32 - m1;
                    }
                }
                Tiles::Q6K(tiles) => {
                    let tile = &tiles[t * kb + b];
                    let d = f16::from_bits(tile.d[r]).to_f32();
                    for (v, y) in y.iter_mut().enumerate() {
                        let q = q6k_value(tile, r, v) as i8 - 32;
                        *y = d * tile.scales[v / 16][r] as f32 * q as f32;
                    }
                }
                Tiles::Q8_0(tiles) => {
                    let tile = &tiles[t * kb + b];
                    let d = f16::from_bits(tile.d[r]).to_f32();
                    for (v, y) in y.iter_mut().enumerate() {
                        *y = d * q8_0_value(tile, r, v) as f32;
                    }
                }
            }
        }
    }

    /// The whole matrix as f32, (rows, cols) row-major (the dense prefill of small models), bit-identical
    /// to `dequantize_row` of every row. Q8_0 (SmolLM2 after requantization) goes a 16-row tile at a
    /// time, reading the tile's bytes in order: per value, `dequantize_row`'s index arithmetic cost
    /// ~10% of a SmolLM2 prompt.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let dst = SyncPtr(out.as_mut_ptr());
        let cols = self.cols;
        if let Tiles::Q8_0(tiles) = &self.tiles {
            let kb = self.blocks_per_row();
            parallel_for_long(self.rows / TILE_ROWS, |tile_cols| {
                for t in tile_cols {
                    // SAFETY: tile column t's 16 rows are written by exactly one worker.
                    let rows = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.get().add(t * TILE_ROWS * cols),
                            TILE_ROWS * cols,
                        )
                    };
                    for b in 0..kb {
                        dequantize_q8_0_tile(&tiles[t * kb + b], rows, cols, b * QK8_0);
                    }
                }
            });
            return out;
        }
        parallel_for_long(self.rows, |rows| {
            for r in rows {
                // SAFETY: each row is written by exactly one worker.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * cols), cols) };
                self.dequantize_row(r, row);
            }
        });
        out
    }

    /// The scalar definition of `matmul`: exact integer sums per sub-block, then the same scaling.
    pub fn matmul_reference(&self, x: &[f32], m: usize) -> Vec<f32> {
        let acts = Activations::new(x, m, self.cols, std::iter::once(self.dtype()));
        let kb = self.blocks_per_row();
        let mut out = vec![0f32; m * self.rows];
        for i in 0..m {
            for row in 0..self.rows {
                let (t, r) = (row / TILE_ROWS, row % TILE_ROWS);
                let mut acc = 0f32;
                for b in 0..kb {
                    match &self.tiles {
                        Tiles::Q8_0(tiles) => {
                            let (tile, a) = (&tiles[t * kb + b], &acts.b32[i * kb + b]);
                            let d = f16::from_bits(tile.d[r]).to_f32();
                            let isum: i32 = (0..QK8_0)
                                .map(|v| q8_0_value(tile, r, v) * a.qs[v] as i32)
                                .sum();
                            acc += isum as f32 * (d * a.d);
                        }
                        Tiles::Q4K(tiles) => {
                            let a = &acts.k[i * kb + b];
                            let tile = &tiles[t * kb + b];
                            let d = f16::from_bits(tile.d[r]).to_f32();
                            let dmin = f16::from_bits(tile.dmin[r]).to_f32();
                            for sub in 0..8 {
                                let isum: i32 = (sub * 32..sub * 32 + 32)
                                    .map(|v| q4k_value(tile, r, v) as i32 * a.qs[v] as i32)
                                    .sum();
                                let bsum = a.bsums[2 * sub] as i32 + a.bsums[2 * sub + 1] as i32;
                                acc += isum as f32 * (d * tile.scales[sub][r] as f32 * a.d);
                                acc -= dmin * tile.mins[sub][r] as f32 * (a.d * bsum as f32);
                            }
                        }
                        Tiles::Q6K(tiles) => {
                            let a = &acts.k[i * kb + b];
                            let tile = &tiles[t * kb + b];
                            let d = f16::from_bits(tile.d[r]).to_f32();
                            for s in 0..16 {
                                let isum: i32 = (s * 16..s * 16 + 16)
                                    .map(|v| q6k_value(tile, r, v) as i32 * a.qs[v] as i32)
                                    .sum();
                                let f = (isum - 32 * a.bsums[s] as i32) as f32;
                                acc += f * (d * tile.scales[s][r] as f32 * a.d);
                            }
                        }
                    }
                }
                out[i * self.rows + row] = acc;
            }
        }
        out
    }

    /// `x @ W^T` for several weights with the same input width (Q/K/V, gate/up): the activations are
    /// quantized once and one parallel section covers every matrix. `x` is (m, cols) row-major; each
    /// result is (m, rows). Needs `available()`.
    pub fn matmul(weights: &[&PackedWeight], x: &[f32], m: usize) -> Vec<Vec<f32>> {
        let k = weights.first().map_or(0, |w| w.cols);
        assert!(
            available() && weights.iter().all(|w| w.cols == k) && x.len() == m * k,
            "packed matmul on mismatched inputs"
        );
        let acts = Activations::new(x, m, k, weights.iter().map(|w| w.dtype()));
        Self::matmul_quantized(weights, &acts, m)
    }

    fn matmul_quantized(weights: &[&PackedWeight], acts: &Activations, m: usize) -> Vec<Vec<f32>> {
        let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0f32; m * w.rows]).collect();
        let row_groups = m.div_ceil(MAX_ROWS);
        // (first unit, weight, destination) per matrix; a unit is one 16-row tile column x up to
        // MAX_ROWS activation rows, with the activation rows innermost so a tile is reused from cache.
        let mut parts = Vec::with_capacity(weights.len());
        let mut total = 0;
        for (w, out) in weights.iter().zip(outs.iter_mut()) {
            parts.push((total, *w, SyncPtr(out.as_mut_ptr())));
            total += w.rows / TILE_ROWS * row_groups;
        }
        let section = |units: std::ops::Range<usize>| {
            for unit in units {
                let Some(&(first, w, dst)) = parts.iter().rev().find(|p| unit >= p.0) else {
                    continue;
                };
                let local = unit - first;
                let tile_col = local / row_groups;
                let m0 = (local % row_groups) * MAX_ROWS;
                let mt = (m - m0).min(MAX_ROWS);
                // SAFETY: `available()` was checked by `matmul`; each unit writes its own 16 columns
                // of its own rows, and `acts` holds m rows of the blocks each weight type needs.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    kernels::unit(w, acts, tile_col, m0, mt, dst.get());
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (w, dst, tile_col, m0, mt);
            }
        };
        if m == 1 {
            parallel_for(total, section);
        } else {
            parallel_for_long(total, section);
        }
        outs
    }
}

/// Q4_K value `v` (0..256) of tile row `r`, 0..15.
fn q4k_value(tile: &TileQ4K, r: usize, v: usize) -> u8 {
    let (g, j) = (v / 8, v % 8);
    let byte = tile.qs[(g * TILE_ROWS + r) * 4 + (j & 3)];
    if j < 4 {
        byte & 0x0F
    } else {
        byte >> 4
    }
}

/// Q6_K value `v` (0..256) of tile row `r`, 0..63 (the weight is value - 32).
fn q6k_value(tile: &TileQ6K, r: usize, v: usize) -> u8 {
    let (g, j) = (v / 4, v % 4);
    let lo = tile.ql[((g / 2) * TILE_ROWS + r) * 4 + j];
    let lo = if g % 2 == 0 { lo & 0x0F } else { lo >> 4 };
    let hi = (tile.qh[((g / 4) * TILE_ROWS + r) * 4 + j] >> (2 * (g % 4))) & 3;
    lo | hi << 4
}

/// Q8_0 value `v` (0..32) of tile row `r`, as the signed weight.
fn q8_0_value(tile: &TileQ8_0, r: usize, v: usize) -> i32 {
    tile.qs[((v / 4) * TILE_ROWS + r) * 4 + v % 4] as i32 - 128
}

/// One Q8_0 tile (16 rows x 32 values) into `rows` (16 rows of `cols` f32) at column `col0`, as
/// `dequantize_row` computes each value.
fn dequantize_q8_0_tile(tile: &TileQ8_0, rows: &mut [f32], cols: usize, col0: usize) {
    let d: [f32; TILE_ROWS] = std::array::from_fn(|r| f16::from_bits(tile.d[r]).to_f32());
    for g in 0..QK8_0 / 4 {
        for (r, d) in d.iter().enumerate() {
            let q = &tile.qs[(g * TILE_ROWS + r) * 4..(g * TILE_ROWS + r) * 4 + 4];
            let at = r * cols + col0 + g * 4;
            for (y, q) in rows[at..at + 4].iter_mut().zip(q) {
                *y = d * (*q as i32 - 128) as f32;
            }
        }
    }
}

/// (values, bytes) per GGUF block of the types the kernels take.
fn layout(dtype: GgmlDType) -> Option<(usize, usize)> {
    match dtype {
        GgmlDType::Q4K => Some((QK_K, Q4K_BLOCK_BYTES)),
        GgmlDType::Q6K => Some((QK_K, Q6K_BLOCK_BYTES)),
        GgmlDType::Q8_0 => Some((QK8_0, Q8_0_BLOCK_BYTES)),
        _ => None,
    }
}

/// Repacks (rows, cols) source blocks of `(block, block_bytes)` = (values, bytes) (the GGUF's bytes,
/// row after row, e.g. a memory map of the file) into tiles, 16-row tile columns in parallel.
fn pack<T: Copy + Send + Sync>(
    data: &[u8],
    rows: usize,
    cols: usize,
    (block, block_bytes): (usize, usize),
    zero: T,
    pack_row: fn(&[u8], &mut T, usize),
) -> std::io::Result<TileBuf<T>> {
    let kb = cols / block;
    let tile_cols = rows / TILE_ROWS;
    if data.len() < rows * kb * block_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} bytes for a {rows}x{cols} matrix of {} bytes",
                data.len(),
                rows * kb * block_bytes
            ),
        ));
    }
    // Written tile by tile below: no page is touched twice.
    let mut tiles = TileBuf::<T>::zeroed(tile_cols * kb)?;
    let dst = SyncPtr(tiles.as_mut_ptr());
    parallel_for(tile_cols, |cols| {
        for c in cols {
            for b in 0..kb {
                let mut tile = zero;
                for r in 0..TILE_ROWS {
                    let at = ((c * TILE_ROWS + r) * kb + b) * block_bytes;
                    pack_row(&data[at..at + block_bytes], &mut tile, r);
                }
                // SAFETY: within capacity; each tile is written by exactly one worker.
                unsafe { dst.get().add(c * kb + b).write(tile) };
            }
        }
    });
    Ok(tiles)
}

/// Eight bytes at `at`, little-endian: the repacking below moves 8 values per integer operation (it is
/// most of the load time of a 2 GB model).
#[inline(always)]
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

const NIBBLES: u64 = 0x0F0F_0F0F_0F0F_0F0F;

/// One GGUF Q8_0 block (d: f16, qs: 32 i8) into row `r` of a tile, + 128.
fn pack_q8_0_row(blk: &[u8], tile: &mut TileQ8_0, r: usize) {
    tile.d[r] = u16::from_le_bytes([blk[0], blk[1]]);
    for g in 0..QK8_0 / 4 {
        let w = u32::from_le_bytes(blk[2 + 4 * g..6 + 4 * g].try_into().expect("4 bytes"));
        // i8 + 128 as u8 is the sign bit flipped.
        put_u32(&mut tile.qs, (g * TILE_ROWS + r) * 4, w ^ 0x8080_8080);
    }
}

/// One GGUF Q4_1 block (d, m: f16; qs: 16 bytes, value j low nibble of byte j, value j + 16 high)
/// requantized into Q8_0 row `r` of a tile, with candle's arithmetic step for step: dequantized as
/// `q * d + m` (`BlockQ4_1::to_float`), then `BlockQ8_0::from_float` (scale amax / 127 stored as f16,
/// values `round(x / scale)` with the unrounded scale), so the tile equals the two-step result exactly.
fn pack_q4_1_row_as_q8_0(blk: &[u8], tile: &mut TileQ8_0, r: usize) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX-512 (and so SSE4.1 and AVX2).
        return unsafe { pack_q4_1_row_as_q8_0_avx512(blk, tile, r) };
    }
    pack_q4_1_row_as_q8_0_portable(blk, tile, r)
}

/// The same code compiled with SSE4.1 / AVX-512: `round` is an instruction instead of a libm call per
/// value, and the loops are vectorized.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1,avx2,avx512f,avx512bw")]
unsafe fn pack_q4_1_row_as_q8_0_avx512(blk: &[u8], tile: &mut TileQ8_0, r: usize) {
    pack_q4_1_row_as_q8_0_portable(blk, tile, r)
}

#[inline(always)]
fn pack_q4_1_row_as_q8_0_portable(blk: &[u8], tile: &mut TileQ8_0, r: usize) {
    let d = f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
    let m = f16::from_bits(u16::from_le_bytes([blk[2], blk[3]])).to_f32();
    let mut xs = [0f32; QK4_1];
    for (j, q) in blk[4..4 + QK4_1 / 2].iter().enumerate() {
        xs[j] = (q & 0x0F) as f32 * d + m;
        xs[j + QK4_1 / 2] = (q >> 4) as f32 * d + m;
    }
    let amax = xs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let scale = amax / 127.0;
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    tile.d[r] = f16::from_f32(scale).to_bits();
    for g in 0..QK8_0 / 4 {
        let q: [u8; 4] = std::array::from_fn(|j| ((xs[4 * g + j] * id).round() as i8 as u8) ^ 0x80);
        tile.qs[(g * TILE_ROWS + r) * 4..(g * TILE_ROWS + r) * 4 + 4].copy_from_slice(&q);
    }
}

/// ggml's 6-bit scale / minimum of Q4_K sub-block `j`.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// One GGUF Q4_K block (d, dmin: f16; scales: 12 bytes; qs: 128 bytes) into row `r` of a tile.
fn pack_q4k_row(blk: &[u8], tile: &mut TileQ4K, r: usize) {
    tile.d[r] = u16::from_le_bytes([blk[0], blk[1]]);
    tile.dmin[r] = u16::from_le_bytes([blk[2], blk[3]]);
    let scales = &blk[4..16];
    for sub in 0..8 {
        let (sc, mn) = q4k_scale_min(sub, scales);
        tile.scales[sub][r] = sc;
        tile.mins[sub][r] = mn;
    }
    // GGUF: 32-byte chunk c holds values [64c, 64c + 32) in its low nibbles, [64c + 32, 64c + 64) high.
    // Tile group g (values 8g..8g + 8) lies in one half of one chunk: its 8 source bytes, one nibble
    // each, become 4 bytes (values 8g + j low, 8g + j + 4 high).
    let qs = &blk[16..144];
    for g in 0..QK_K / 8 {
        let (c, i) = (g / 8, (g % 8) * 8);
        let x = if i < 32 {
            u64_at(qs, c * 32 + i) & NIBBLES
        } else {
            (u64_at(qs, c * 32 + i - 32) >> 4) & NIBBLES
        };
        put_u32(
            &mut tile.qs,
            (g * TILE_ROWS + r) * 4,
            (x as u32) | ((x >> 32) as u32) << 4,
        );
    }
}

/// One GGUF Q6_K block (ql: 128 bytes, qh: 64, scales: 16 i8, d: f16) into row `r` of a tile.
fn pack_q6k_row(blk: &[u8], tile: &mut TileQ6K, r: usize) {
    let (ql, qh) = (&blk[0..128], &blk[128..192]);
    for s in 0..16 {
        tile.scales[s][r] = blk[192 + s] as i8;
    }
    tile.d[r] = u16::from_le_bytes([blk[208], blk[209]]);
    // The 6-bit values 0..63, one per byte, 8 at a time: quarter k of half h takes the low (k < 2) or
    // high nibbles of ql[h * 64 + (k % 2) * 32 ..] and bits 2k..2k + 2 of qh[h * 32 ..].
    let mut vals = [0u8; QK_K];
    for h in 0..2 {
        for k in 0..4 {
            for j in (0..32).step_by(8) {
                let l = u64_at(ql, h * 64 + (k % 2) * 32 + j);
                let l = if k < 2 {
                    l & NIBBLES
                } else {
                    (l >> 4) & NIBBLES
                };
                let hb = (u64_at(qh, h * 32 + j) >> (2 * k)) & 0x0303_0303_0303_0303;
                let at = h * 128 + k * 32 + j;
                vals[at..at + 8].copy_from_slice(&(l | hb << 4).to_le_bytes());
            }
        }
    }
    for p in 0..QK_K / 8 {
        // Groups 2p (low nibbles) and 2p + 1 (high) of 4 values.
        let x = u64_at(&vals, 8 * p) & NIBBLES;
        put_u32(
            &mut tile.ql,
            (p * TILE_ROWS + r) * 4,
            (x as u32) | ((x >> 32) as u32) << 4,
        );
    }
    for q in 0..QK_K / 16 {
        // Groups 4q + t (t = 0..4) of 4 values: their top 2 bits at bits 2t..2t + 2 of each byte.
        let (a, b) = (u64_at(&vals, 16 * q), u64_at(&vals, 16 * q + 8));
        let top = |w: u64| ((w >> 4) as u32) & 0x0303_0303;
        let byte = top(a) | top(a >> 32) << 2 | top(b) << 4 | top(b >> 32) << 6;
        put_u32(&mut tile.qh, (q * TILE_ROWS + r) * 4, byte);
    }
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use super::{
        Activations, PackedWeight, TileQ4K, TileQ6K, TileQ8_0, Tiles, MAX_ROWS, Q8B, Q8K, TILE_ROWS,
    };
    use core::arch::x86_64::*;

    /// One unit: tile column `tile_col` (16 output columns) against activation rows m0..m0+mt.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `dst` points to (m, w.rows) f32 and `xq` holds m rows.
    pub(super) unsafe fn unit(
        w: &PackedWeight,
        acts: &Activations,
        tile_col: usize,
        m0: usize,
        mt: usize,
        dst: *mut f32,
    ) {
        match mt {
            1 => unit_n::<1>(w, acts, tile_col, m0, dst),
            2 => unit_n::<2>(w, acts, tile_col, m0, dst),
            3 => unit_n::<3>(w, acts, tile_col, m0, dst),
            _ => unit_n::<MAX_ROWS>(w, acts, tile_col, m0, dst),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn unit_n<const MT: usize>(
        w: &PackedWeight,
        acts: &Activations,
        tile_col: usize,
        m0: usize,
        dst: *mut f32,
    ) {
        let kb = w.blocks_per_row();
        let mut acc = [_mm512_setzero_ps(); MT];
        // One match per unit, not per block: the loops below are each one type's straight line.
        match &w.tiles {
            Tiles::Q4K(t) => {
                let t = &t[tile_col * kb..(tile_col + 1) * kb];
                for (b, tile) in t.iter().enumerate() {
                    let a: [&Q8K; MT] = std::array::from_fn(|i| &acts.k[(m0 + i) * kb + b]);
                    q4k_tile(tile, &a, &mut acc);
                }
            }
            Tiles::Q6K(t) => {
                let t = &t[tile_col * kb..(tile_col + 1) * kb];
                for (b, tile) in t.iter().enumerate() {
                    let a: [&Q8K; MT] = std::array::from_fn(|i| &acts.k[(m0 + i) * kb + b]);
                    q6k_tile(tile, &a, &mut acc);
                }
            }
            Tiles::Q8_0(t) => {
                let t = &t[tile_col * kb..(tile_col + 1) * kb];
                for (b, tile) in t.iter().enumerate() {
                    let a: [&Q8B; MT] = std::array::from_fn(|i| &acts.b32[(m0 + i) * kb + b]);
                    q8_0_tile(tile, &a, &mut acc);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(dst.add((m0 + i) * w.rows + tile_col * TILE_ROWS), *a);
        }
    }

    #[inline(always)]
    unsafe fn bcast4(qs: &[i8], off: usize) -> __m512i {
        debug_assert!(off + 4 <= qs.len());
        _mm512_set1_epi32(std::ptr::read_unaligned(qs.as_ptr().add(off) as *const i32))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn load(bytes: &[u8], off: usize) -> __m512i {
        debug_assert!(off + 64 <= bytes.len());
        _mm512_loadu_si512(bytes.as_ptr().add(off) as *const _)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn f16x16(bits: &[u16; 16]) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(bits.as_ptr() as *const __m256i))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q4k_tile<const MT: usize>(t: &TileQ4K, acts: &[&Q8K; MT], acc: &mut [__m512; MT]) {
        let lo_mask = _mm512_set1_epi8(0x0F);
        let hi_mask = _mm512_set1_epi8(0xF0u8 as i8);
        // Scales and minimums are applied in integers (exact: |sum| < 2^25) and the tile converted to
        // float once, as ggml does per super-block: 2 float ops per tile instead of 8 per sub-block.
        let mut isum = [_mm512_setzero_si512(); MT];
        let mut msum = [_mm512_setzero_si512(); MT];
        for sub in 0..8 {
            let mut lo = [_mm512_setzero_si512(); MT];
            let mut hi = [_mm512_setzero_si512(); MT];
            for g4 in 0..4 {
                let w = load(&t.qs, (sub * 4 + g4) * TILE_ROWS * 4);
                let wl = _mm512_and_si512(w, lo_mask);
                // The high nibble left in place is 16x its value: one shift per sub-block below
                // instead of one per load.
                let wh = _mm512_and_si512(w, hi_mask);
                let off = sub * 32 + g4 * 8;
                for i in 0..MT {
                    lo[i] = _mm512_dpbusd_epi32(lo[i], wl, bcast4(&acts[i].qs, off));
                    hi[i] = _mm512_dpbusd_epi32(hi[i], wh, bcast4(&acts[i].qs, off + 4));
                }
            }
            let sc =
                _mm512_cvtepu8_epi32(_mm_loadu_si128(t.scales[sub].as_ptr() as *const __m128i));
            let mn = _mm512_cvtepu8_epi32(_mm_loadu_si128(t.mins[sub].as_ptr() as *const __m128i));
            for i in 0..MT {
                let dot = _mm512_add_epi32(lo[i], _mm512_srai_epi32::<4>(hi[i]));
                isum[i] = _mm512_add_epi32(isum[i], _mm512_mullo_epi32(dot, sc));
                let a = acts[i];
                let bsum = a.bsums[2 * sub] as i32 + a.bsums[2 * sub + 1] as i32;
                msum[i] =
                    _mm512_add_epi32(msum[i], _mm512_mullo_epi32(mn, _mm512_set1_epi32(bsum)));
            }
        }
        let d = f16x16(&t.d);
        let dmin = f16x16(&t.dmin);
        for i in 0..MT {
            let ad = _mm512_set1_ps(acts[i].d);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(d, ad), acc[i]);
            acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum[i]), _mm512_mul_ps(dmin, ad), acc[i]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q8_0_tile<const MT: usize>(t: &TileQ8_0, acts: &[&Q8B; MT], acc: &mut [__m512; MT]) {
        let d = f16x16(&t.d);
        let mut x = [_mm512_setzero_si512(); MT];
        let mut y = [_mm512_setzero_si512(); MT];
        for g in (0..8).step_by(2) {
            let w0 = load(&t.qs, g * TILE_ROWS * 4);
            let w1 = load(&t.qs, (g + 1) * TILE_ROWS * 4);
            for i in 0..MT {
                x[i] = _mm512_dpbusd_epi32(x[i], w0, bcast4(&acts[i].qs, g * 4));
                y[i] = _mm512_dpbusd_epi32(y[i], w1, bcast4(&acts[i].qs, g * 4 + 4));
            }
        }
        for i in 0..MT {
            let a = acts[i];
            // The weights are stored + 128: subtract 128 x the activations' sum.
            let isum =
                _mm512_sub_epi32(_mm512_add_epi32(x[i], y[i]), _mm512_set1_epi32(128 * a.sum));
            let f = _mm512_cvtepi32_ps(isum);
            acc[i] = _mm512_fmadd_ps(f, _mm512_mul_ps(d, _mm512_set1_ps(a.d)), acc[i]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q6k_tile<const MT: usize>(t: &TileQ6K, acts: &[&Q8K; MT], acc: &mut [__m512; MT]) {
        let m4 = _mm512_set1_epi8(0x0F);
        let m30 = _mm512_set1_epi8(0x30);
        // Scales applied in integers (|sum| < 2^29), one float conversion per tile.
        let mut isum = [_mm512_setzero_si512(); MT];
        for s in 0..16 {
            let l0 = load(&t.ql, (2 * s) * TILE_ROWS * 4);
            let l1 = load(&t.ql, (2 * s + 1) * TILE_ROWS * 4);
            let h = load(&t.qh, s * TILE_ROWS * 4);
            let w0 = _mm512_or_si512(
                _mm512_and_si512(l0, m4),
                _mm512_and_si512(_mm512_slli_epi16::<4>(h), m30),
            );
            let w1 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(l0), m4),
                _mm512_and_si512(_mm512_slli_epi16::<2>(h), m30),
            );
            let w2 = _mm512_or_si512(_mm512_and_si512(l1, m4), _mm512_and_si512(h, m30));
            let w3 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(l1), m4),
                _mm512_and_si512(_mm512_srli_epi16::<2>(h), m30),
            );
            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(t.scales[s].as_ptr() as *const __m128i));
            // The tile two ahead, a quarter of it per sub-block: measured on one thread, a 8192 x
            // 3072 Q6_K mat-vec read 9.8 GB/s from memory without (21.5 with the weights in cache)
            // and 22-24 GB/s with; Q4_K and Q8_0 tiles stream at 22-29 GB/s without and did not
            // gain. Past the last tile the address is only a hint (prefetches do not fault).
            let ahead = (t as *const TileQ6K as *const i8)
                .wrapping_add(2 * std::mem::size_of::<TileQ6K>() + s * 256);
            for l in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(l * 64));
            }
            for i in 0..MT {
                let a = acts[i];
                let off = s * 16;
                let x = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, bcast4(&a.qs, off));
                let y = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w1, bcast4(&a.qs, off + 4));
                let x = _mm512_dpbusd_epi32(x, w2, bcast4(&a.qs, off + 8));
                let y = _mm512_dpbusd_epi32(y, w3, bcast4(&a.qs, off + 12));
                // The weights are stored + 32: subtract 32 x the activations' sum.
                let dot = _mm512_sub_epi32(
                    _mm512_add_epi32(x, y),
                    _mm512_set1_epi32(32 * a.bsums[s] as i32),
                );
                isum[i] = _mm512_add_epi32(isum[i], _mm512_mullo_epi32(dot, sc));
            }
        }
        let d = f16x16(&t.d);
        for i in 0..MT {
            let ad = _mm512_mul_ps(d, _mm512_set1_ps(acts[i].d));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), ad, acc[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor};

    /// Deterministic values with the spread of real activations / weights.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::engine::test_values(n, seed, 2.0)
    }

    fn quantized(dtype: GgmlDType, rows: usize, cols: usize) -> QTensor {
        let w = Tensor::from_vec(values(rows * cols, 3), (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&w, dtype).unwrap()
    }

    #[test]
    fn dequantization_is_bit_identical_to_candles() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
            let q = quantized(dtype, 48, 512);
            let packed = PackedWeight::from_qtensor(&q).unwrap().unwrap();
            let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            assert_eq!(
                packed.dequantize(),
                want.to_vec1::<f32>().unwrap(),
                "{dtype:?}"
            );
            // Held once, at the size of the GGUF's blocks (Q4_K: + the unpacked 6-bit scales).
            let tiles = 48 / TILE_ROWS * 512 / QK_K;
            let want_bytes = match dtype {
                GgmlDType::Q4K => tiles * 2368,
                _ => q.storage_size_in_bytes(),
            };
            assert_eq!(packed.size_in_bytes(), want_bytes, "{dtype:?}");
        }
    }

    #[test]
    fn kernels_match_the_scalar_reference_and_candle() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: kernels not exercised");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
            // candle quantizes the activations as we do (Q8_K for the K-quants, Q8_0 for Q8_0 weights
            // when the width is not a multiple of 256, as SmolLM2's 576): rounding order differs only.
            let (rows, cols) = (48, if dtype == GgmlDType::Q8_0 { 800 } else { 768 });
            let q = quantized(dtype, rows, cols);
            let packed = PackedWeight::from_qtensor(&q).unwrap().unwrap();
            let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
            for m in [1, 2, 3, 4, 5, 9] {
                let x = values(m * cols, 11 + m as u64);
                // Three workers: the parallel split is exercised whatever RAYON_NUM_THREADS says.
                let got = pool.install(|| PackedWeight::matmul(&[&packed, &packed], &x, m));
                let reference = packed.matmul_reference(&x, m);
                let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
                let theirs = candle.forward(&xt).unwrap().flatten_all().unwrap();
                let theirs = theirs.to_vec1::<f32>().unwrap();
                for out in &got {
                    for ((a, b), c) in out.iter().zip(&reference).zip(&theirs) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{dtype:?} m={m}: {a} vs reference {b}"
                        );
                        assert!(
                            (a - c).abs() <= 1e-3 * (1.0 + c.abs()),
                            "{dtype:?} m={m}: {a} vs candle {c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_in_any_batch_and_on_any_thread_count() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: kernels not exercised");
            return;
        }
        let pools: Vec<rayon::ThreadPool> = [1, 2]
            .into_iter()
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap()
            })
            .collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
            let (rows, cols) = (64, if dtype == GgmlDType::Q8_0 { 576 } else { 768 });
            let packed = PackedWeight::from_qtensor(&quantized(dtype, rows, cols))
                .unwrap()
                .unwrap();
            // 11 rows: two full MAX_ROWS units and a 3-row one; each row again alone and in other
            // batches (offsets inside a unit differ).
            let m = 11;
            let x = values(m * cols, 29);
            let batch = pools[1].install(|| PackedWeight::matmul(&[&packed], &x, m).remove(0));
            for pool in &pools {
                let again = pool.install(|| PackedWeight::matmul(&[&packed], &x, m).remove(0));
                assert_eq!(bits(&again), bits(&batch), "{dtype:?}: thread count");
                for (start, len) in [(0, 1), (5, 1), (10, 1), (1, 4), (3, 5), (6, 5)] {
                    let part = &x[start * cols..(start + len) * cols];
                    let got =
                        pool.install(|| PackedWeight::matmul(&[&packed], part, len).remove(0));
                    assert_eq!(
                        bits(&got),
                        bits(&batch[start * rows..(start + len) * rows]),
                        "{dtype:?}: rows {start}..{} computed apart",
                        start + len
                    );
                }
            }
        }
    }

    #[test]
    fn q4_1_requantized_in_one_pass_equals_candles_dequantize_then_quantize() {
        let (rows, cols) = (48, 800);
        let mut data = quantized(GgmlDType::Q4_1, rows, cols)
            .data()
            .unwrap()
            .into_owned();
        // Edge blocks: all zero (scale 0), constant (d = 0, m != 0), negative minimum with a large
        // step (values of both signs), the largest f16 step.
        data[..Q4_1_BLOCK_BYTES].fill(0);
        let edge = |data: &mut Vec<u8>, b: usize, d: f32, m: f32| {
            let at = b * Q4_1_BLOCK_BYTES;
            data[at..at + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            data[at + 2..at + 4].copy_from_slice(&f16::from_f32(m).to_le_bytes());
        };
        edge(&mut data, 1, 0.0, 0.37);
        edge(&mut data, 2, 0.9, -6.5);
        edge(&mut data, 3, 4000.0, -30000.0);
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Borrowed(&data),
            &Device::Cpu,
            GgmlDType::Q4_1,
        )
        .unwrap();
        let q = QTensor::new(storage, (rows, cols)).unwrap();
        let two_steps =
            QTensor::quantize(&q.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
        let want = PackedWeight::from_qtensor(&two_steps).unwrap().unwrap();
        let direct = PackedWeight::from_q4_1_bytes(rows, cols, &data).unwrap();
        assert_eq!(direct.dtype(), GgmlDType::Q8_0);
        assert!(direct.tile_bytes() == want.tile_bytes(), "tiles differ");
        // Short input is an error, not a panic.
        assert!(PackedWeight::from_q4_1_bytes(rows, cols, &data[..100]).is_err());
    }

    #[test]
    fn mapped_tiles_are_the_packed_tiles() {
        let q = quantized(GgmlDType::Q6K, 32, 512);
        let packed = PackedWeight::from_qtensor(&q).unwrap().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &[0u8; 4096]).unwrap();
        std::io::Write::write_all(&mut file, packed.tile_bytes()).unwrap();
        let map = std::sync::Arc::new(unsafe { memmap2::Mmap::map(&file).unwrap() });
        let mapped = PackedWeight::from_mapped(GgmlDType::Q6K, 32, 512, map.clone(), 4096).unwrap();
        assert_eq!(mapped.dequantize(), packed.dequantize());
        // A region past the end of the file, or a shape the file cannot hold, is refused.
        assert!(PackedWeight::from_mapped(GgmlDType::Q6K, 32, 512, map.clone(), 8192).is_none());
        assert!(PackedWeight::from_mapped(GgmlDType::Q6K, 64, 512, map, 4096).is_none());
    }

    #[test]
    fn unsupported_types_and_shapes_stay_with_candle() {
        let q = quantized(GgmlDType::Q4_1, 48, 512);
        assert!(PackedWeight::from_qtensor(&q).unwrap().is_none());
        let q = quantized(GgmlDType::Q4K, 40, 512);
        assert!(PackedWeight::from_qtensor(&q).unwrap().is_none());
    }
}
