//! Attention over the f16 KV cache, read in place: one new query token (decode) or every token of a
//! prompt batch (prefill), through the same per-row kernel.
//!
//! Why this is ours: through candle tensors a decode step ran, per layer, a batched f32 GEMM per KV head
//! for Q·Kᵀ and again for P·V (16 small GEMM calls, each with its own parallel section), a softmax
//! and several scaled copies; at 28 layers that is ~450 GEMM calls per token, and the f32 cache doubles
//! the bytes read. Here the query heads that share a KV head (GQA) read each cached key and value row
//! once, converted from f16 in registers, one parallel section per layer. `decode_reference` is the
//! scalar definition the kernel is tested against.
//!
//! Why prefill runs the decode kernel row by row: a prompt row's attention through a GEMM and a
//! masked softmax over the whole batch depends on the batch (the GEMM's blocking follows the matrix
//! sizes; the softmax's vector lanes run over a row as long as the batch's last position), so the
//! same token got different bits when the prompt was split differently (a reused prefix, prefill
//! chunks, decode). `prefill` computes row i exactly as `decode` computes that token alone, over
//! positions `0..=its own`: one unit per (row, KV head), each run whole by one thread, so the result
//! depends neither on the split nor on the thread count.

use half::f16;

use super::parallel::{parallel_for, parallel_for_long, SyncPtr};

/// One layer's cache and the shape of its heads.
pub struct CacheView<'a> {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// (kv_heads, capacity, head_dim); positions `0..len` hold keys / values.
    pub k: &'a [f16],
    pub v: &'a [f16],
    pub capacity: usize,
    pub len: usize,
    /// Sliding-window (local) attention: a query at position p sees only positions
    /// `p + 1 - window ..= p` (Gemma 3's local layers, llama.cpp's `LLAMA_SWA_TYPE_STANDARD`);
    /// `None` sees every earlier position.
    pub window: Option<usize>,
}

impl CacheView<'_> {
    fn check(&self, q: &[f32], out: &[f32]) {
        let hd = self.head_dim;
        assert!(
            self.n_kv_head > 0
                && self.n_head.is_multiple_of(self.n_kv_head)
                && q.len() == self.n_head * hd
                && out.len() == q.len()
                && self.len <= self.capacity
                && self.len > 0
                && self.k.len() >= self.n_kv_head * self.capacity * hd
                && self.v.len() >= self.n_kv_head * self.capacity * hd,
            "decode attention on mismatched buffers"
        );
    }

    /// Key (or value) rows of KV head `g`, positions first..len.
    fn rows<'b>(&self, buf: &'b [f16], g: usize, first: usize, len: usize) -> &'b [f16] {
        let start = g * self.capacity * self.head_dim;
        &buf[start + first * self.head_dim..start + len * self.head_dim]
    }

    /// The first position a query at position `len - 1` attends to.
    fn first_visible(&self, len: usize) -> usize {
        self.window.map_or(0, |w| len.saturating_sub(w))
    }

    /// The attention of one query token for KV head `g`: `q` and `out` are that head's query group
    /// (n_rep x head_dim), attending to positions `0..len`. Decode and prefill both run exactly this.
    fn attend_group(&self, g: usize, len: usize, q: &[f32], out: &mut [f32]) {
        let n_rep = self.n_head / self.n_kv_head;
        let first = self.first_visible(len);
        let (k, v) = (
            self.rows(self.k, g, first, len),
            self.rows(self.v, g, first, len),
        );
        let len = len - first;
        #[cfg(target_arch = "x86_64")]
        if simd::available() && self.head_dim.is_multiple_of(16) && n_rep <= simd::MAX_REP {
            // SAFETY: AVX-512F checked; the slices' lengths were checked by `check`.
            if unsafe { simd::group_in_registers(q, k, v, len, self.head_dim, out) } {
                return;
            }
            // SAFETY: as above.
            unsafe { simd::group(q, k, v, len, self.head_dim, out) };
            return;
        }
        group_portable(q, k, v, len, self.head_dim, out);
    }
}

/// softmax(q·Kᵀ / √head_dim)·V for every query head; `q` and `out` are (n_head, head_dim), query head
/// h reading KV head h / (n_head / n_kv_head), as llama.cpp and candle's `repeat_kv` pair them.
pub fn decode(view: &CacheView, q: &[f32], out: &mut [f32]) {
    view.check(q, out);
    let group = view.n_head / view.n_kv_head * view.head_dim;
    let dst = SyncPtr(out.as_mut_ptr());
    parallel_for(view.n_kv_head, |groups| {
        for g in groups {
            // SAFETY: KV head g's query group is written by exactly one worker.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.get().add(g * group), group) };
            view.attend_group(g, view.len, &q[g * group..(g + 1) * group], out);
        }
    });
}

/// True when the kernels run vectorized (AVX-512F). Without it `prefill` would run every row on the
/// portable kernel (not measured against candle's matmuls, which prompt batches keep there); nothing
/// is split-invariant on such CPUs anyway.
pub fn vectorized() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Causal attention of the last `rows` positions of the cache (a prompt batch whose keys and values
/// were just appended): `q` and `out` are (rows, n_head, head_dim), and row i attends to positions
/// `0..view.len - rows + i + 1`, computed exactly as `decode` computes that token on its own (the
/// module's note says why).
pub fn prefill(view: &CacheView, q: &[f32], rows: usize, out: &mut [f32]) {
    let width = view.n_head * view.head_dim;
    assert!(
        rows > 0 && rows <= view.len && q.len() == rows * width && out.len() == q.len(),
        "prefill attention on mismatched buffers"
    );
    view.check(&q[..width], &out[..width]);
    let group = view.n_head / view.n_kv_head * view.head_dim;
    let first_len = view.len - rows + 1;
    let dst = SyncPtr(out.as_mut_ptr());
    parallel_for_long(rows * view.n_kv_head, |units| {
        for unit in units {
            let (i, g) = (unit / view.n_kv_head, unit % view.n_kv_head);
            let at = i * width + g * group;
            // SAFETY: each (row, KV head) unit writes its own query group of its own row.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.get().add(at), group) };
            view.attend_group(g, first_len + i, &q[at..at + group], out);
        }
    });
}

/// The scalar definition: each query head on its own, in f32 with the cached values widened exactly.
pub fn decode_reference(view: &CacheView, q: &[f32], out: &mut [f32]) {
    view.check(q, out);
    let (hd, n_rep) = (view.head_dim, view.n_head / view.n_kv_head);
    let scale = 1.0 / (hd as f32).sqrt();
    for h in 0..view.n_head {
        let g = h / n_rep;
        let first = view.first_visible(view.len);
        let (k, v) = (
            view.rows(view.k, g, first, view.len),
            view.rows(view.v, g, first, view.len),
        );
        let qh = &q[h * hd..(h + 1) * hd];
        let scores: Vec<f32> = (0..view.len - first)
            .map(|p| {
                let kp = &k[p * hd..(p + 1) * hd];
                qh.iter().zip(kp).map(|(a, b)| a * b.to_f32()).sum::<f32>() * scale
            })
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = w.iter().sum();
        let o = &mut out[h * hd..(h + 1) * hd];
        o.fill(0.0);
        for (p, wp) in w.iter().enumerate() {
            for (o, vv) in o.iter_mut().zip(&v[p * hd..(p + 1) * hd]) {
                *o += wp / sum * vv.to_f32();
            }
        }
    }
}

/// Each `len`-long row of scores in `w` becomes its softmax, in place.
fn softmax_rows(w: &mut [f32], len: usize) {
    for row in w.chunks_mut(len) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One KV head's query group without SIMD intrinsics (CPUs without AVX-512, odd head sizes): rows are
/// widened through `half`'s slice conversion (F16C where the CPU has it).
fn group_portable(q: &[f32], k: &[f16], v: &[f16], len: usize, hd: usize, out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let n_rep = q.len() / hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut row = vec![0f32; hd];
    let mut w = vec![0f32; n_rep * len];
    for p in 0..len {
        k[p * hd..(p + 1) * hd].convert_to_f32_slice(&mut row);
        for r in 0..n_rep {
            let qr = &q[r * hd..(r + 1) * hd];
            w[r * len + p] = qr.iter().zip(&row).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
    }
    softmax_rows(&mut w, len);
    out.fill(0.0);
    for p in 0..len {
        v[p * hd..(p + 1) * hd].convert_to_f32_slice(&mut row);
        for r in 0..n_rep {
            let wp = w[r * len + p];
            for (o, x) in out[r * hd..(r + 1) * hd].iter_mut().zip(&row) {
                *o += wp * x;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::softmax_rows;
    use core::arch::x86_64::*;
    use half::f16;

    /// Query heads per KV head the register-blocked kernel takes (Llama 3: 3, SmolLM2: 3).
    pub(super) const MAX_REP: usize = 8;

    pub(super) fn available() -> bool {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }

    /// The query group in registers, for the head shapes of the models we run (up to 4 query heads per
    /// KV head, head_dim 32 / 64 / 128: Llama 3.2 is 3 x 128, SmolLM2 3 x 64); false for others.
    /// The queries, the scores' accumulators and the output rows stay in registers across the whole
    /// cache, the softmax's `exp` is vectorized: at a 600-token context `group` stored and reloaded
    /// each output row once per position and spent ~14 k scalar `expf` calls per layer.
    ///
    /// # Safety
    /// As `group`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn group_in_registers(
        q: &[f32],
        k: &[f16],
        v: &[f16],
        len: usize,
        hd: usize,
        out: &mut [f32],
    ) -> bool {
        macro_rules! dispatch {
            ($($r:literal),*) => {
                match (q.len() / hd, hd / 16) {
                    $(
                        ($r, 2) => group_regs::<$r, 2>(q, k, v, len, out),
                        ($r, 4) => group_regs::<$r, 4>(q, k, v, len, out),
                        ($r, 8) => group_regs::<$r, 8>(q, k, v, len, out),
                    )*
                    _ => return false,
                }
            };
        }
        dispatch!(1, 2, 3, 4);
        true
    }

    /// R query heads of C x 16 values each. Indexed loops over the register arrays: the
    /// register-blocked form reads as the arithmetic it is.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn group_regs<const R: usize, const C: usize>(
        q: &[f32],
        k: &[f16],
        v: &[f16],
        len: usize,
        out: &mut [f32],
    ) {
        let hd = C * 16;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut w = vec![0f32; R * len];
        let (kp, vp) = (k.as_ptr() as *const u16, v.as_ptr() as *const u16);
        let qr: [[__m512; C]; R] = std::array::from_fn(|r| {
            std::array::from_fn(|c| _mm512_loadu_ps(q.as_ptr().add(r * hd + c * 16)))
        });
        for p in 0..len {
            let mut acc = [_mm512_setzero_ps(); R];
            for c in 0..C {
                let kv = _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(p * hd + c * 16) as *const _));
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(qr[r][c], kv, acc[r]);
                }
            }
            for r in 0..R {
                *w.get_unchecked_mut(r * len + p) = _mm512_reduce_add_ps(acc[r]) * scale;
            }
        }
        for row in w.chunks_mut(len) {
            softmax_row(row);
        }
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for p in 0..len {
            let wp: [__m512; R] =
                std::array::from_fn(|r| _mm512_set1_ps(*w.get_unchecked(r * len + p)));
            for c in 0..C {
                let vv = _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(p * hd + c * 16) as *const _));
                for r in 0..R {
                    acc[r][c] = _mm512_fmadd_ps(wp[r], vv, acc[r][c]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(r * hd + c * 16), *a);
            }
        }
    }

    /// A row of scores becomes its softmax, in place, 16 values at a time.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn softmax_row(row: &mut [f32]) {
        let n = row.len();
        let full = n / 16 * 16;
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(row.as_ptr().add(i)));
        }
        let mut max = _mm512_reduce_max_ps(vmax);
        for x in &row[full..] {
            max = max.max(*x);
        }
        let m = _mm512_set1_ps(max);
        let mut vsum = _mm512_setzero_ps();
        for i in (0..full).step_by(16) {
            let at = row.as_mut_ptr().add(i);
            let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(at), m));
            _mm512_storeu_ps(at, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        let mut sum = _mm512_reduce_add_ps(vsum);
        for x in &mut row[full..] {
            *x = exp_scalar(*x - max);
            sum += *x;
        }
        let inv = _mm512_set1_ps(1.0 / sum);
        for i in (0..full).step_by(16) {
            let at = row.as_mut_ptr().add(i);
            _mm512_storeu_ps(at, _mm512_mul_ps(_mm512_loadu_ps(at), inv));
        }
        for x in &mut row[full..] {
            *x *= 1.0 / sum;
        }
    }

    /// The last < 16 values of a row, with `exp512`'s arithmetic (one lane).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_scalar(x: f32) -> f32 {
        _mm512_cvtss_f32(exp512(_mm512_set1_ps(x)))
    }

    /// e^x for x <= 0 (scores minus their maximum), Cephes' `expf` polynomial (about 1 ulp): the
    /// range reduction x = n ln 2 + r with |r| <= ln 2 / 2, e^r by a degree-6 polynomial, 2^n by
    /// `vscalefps`. Below -87.3 the result is ~1e-38 instead of 0: a weight nothing can notice.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp512(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let e = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(e, n)
    }

    /// # Safety
    /// AVX-512F; `q`, `out`: (n_rep ≤ MAX_REP, hd) with hd a multiple of 16; `k`, `v`: (len, hd).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn group(
        q: &[f32],
        k: &[f16],
        v: &[f16],
        len: usize,
        hd: usize,
        out: &mut [f32],
    ) {
        let n_rep = q.len() / hd;
        let chunks = hd / 16;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut w = vec![0f32; n_rep * len];
        let (kp, vp) = (k.as_ptr() as *const u16, v.as_ptr() as *const u16);
        for p in 0..len {
            let mut acc = [_mm512_setzero_ps(); MAX_REP];
            for c in 0..chunks {
                let kv = _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(p * hd + c * 16) as *const _));
                for (r, a) in acc.iter_mut().enumerate().take(n_rep) {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(q.as_ptr().add(r * hd + c * 16)), kv, *a);
                }
            }
            for (r, a) in acc.iter().enumerate().take(n_rep) {
                w[r * len + p] = _mm512_reduce_add_ps(*a) * scale;
            }
        }
        softmax_rows(&mut w, len);
        out.fill(0.0);
        let o = out.as_mut_ptr();
        for p in 0..len {
            for c in 0..chunks {
                let vv = _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(p * hd + c * 16) as *const _));
                for r in 0..n_rep {
                    let at = o.add(r * hd + c * 16);
                    let wp = _mm512_set1_ps(*w.get_unchecked(r * len + p));
                    _mm512_storeu_ps(at, _mm512_fmadd_ps(wp, vv, _mm512_loadu_ps(at)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::engine::test_values(n, seed, 4.0)
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vectorized_exp_is_within_two_ulp_of_libm() {
        if !simd::available() {
            return;
        }
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            // SAFETY: AVX-512F checked above.
            let got = unsafe {
                use core::arch::x86_64::*;
                _mm512_cvtss_f32(simd::exp512(_mm512_set1_ps(x)))
            };
            let want = x.exp();
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON * want,
                "exp({x}) = {got}, libm {want}"
            );
        }
    }

    /// Bits of every value: equal means bit-identical, not within a tolerance.
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn prefill_rows_are_bit_identical_to_decoding_each_token_on_one_or_two_threads() {
        // SmolLM2 (9/3 x 64), Llama 3 (24/8 x 128, in the register kernel), 5 query heads per KV head
        // (AVX-512 `group`), an odd head size (portable path).
        // Every row also with a sliding window shorter than the batch (Gemma 3's local layers).
        for ((n_head, n_kv_head, hd), window) in [(9, 3, 64), (24, 8, 128), (10, 2, 64), (4, 2, 24)]
            .into_iter()
            .flat_map(|shape| [(shape, None), (shape, Some(20))])
        {
            let (capacity, len, rows) = (512, 300, 37);
            let n = n_kv_head * capacity * hd;
            let k: Vec<f16> = values(n, 11).into_iter().map(f16::from_f32).collect();
            let v: Vec<f16> = values(n, 13).into_iter().map(f16::from_f32).collect();
            let view = |len| CacheView {
                n_head,
                n_kv_head,
                head_dim: hd,
                k: &k,
                v: &v,
                capacity,
                len,
                window,
            };
            let width = n_head * hd;
            let q = values(rows * width, 17);
            let prefill_on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![0f32; q.len()];
                pool.install(|| prefill(&view(len), &q, rows, &mut out));
                out
            };
            let one = prefill_on(1);
            assert_eq!(
                bits(&one),
                bits(&prefill_on(2)),
                "{n_head}/{n_kv_head}x{hd}"
            );
            for i in 0..rows {
                let mut alone = vec![0f32; width];
                let qi = &q[i * width..(i + 1) * width];
                decode(&view(len - rows + i + 1), qi, &mut alone);
                assert_eq!(
                    bits(&alone),
                    bits(&one[i * width..(i + 1) * width]),
                    "{n_head}/{n_kv_head}x{hd} window {window:?}: row {i}"
                );
            }
        }
    }

    #[test]
    fn decode_attention_matches_the_scalar_reference() {
        // Llama 3 (24/8 heads of 128), SmolLM2 (9/3 of 64), an odd head size (portable path), MHA.
        // 10/2 x 64: 5 query heads per KV head, beyond the register kernel (AVX-512 `group`).
        for (n_head, n_kv_head, hd) in [
            (24, 8, 128),
            (9, 3, 64),
            (4, 2, 24),
            (4, 4, 32),
            (8, 2, 128),
            (10, 2, 64),
        ] {
            for (capacity, len, window) in [
                (8, 1, None),
                (256, 37, None),
                (512, 300, None),
                (1024, 640, None),
                (512, 300, Some(64)),
                (8, 5, Some(8)),
            ] {
                let n = n_kv_head * capacity * hd;
                let k: Vec<f16> = values(n, 5).into_iter().map(f16::from_f32).collect();
                let v: Vec<f16> = values(n, 7).into_iter().map(f16::from_f32).collect();
                let view = CacheView {
                    n_head,
                    n_kv_head,
                    head_dim: hd,
                    k: &k,
                    v: &v,
                    capacity,
                    len,
                    window,
                };
                let q = values(n_head * hd, 9);
                let (mut got, mut want) = (vec![0f32; q.len()], vec![0f32; q.len()]);
                decode(&view, &q, &mut got);
                decode_reference(&view, &q, &mut want);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{n_head}/{n_kv_head}x{hd} len {len}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
