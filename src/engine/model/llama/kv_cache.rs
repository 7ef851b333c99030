//! The KV cache of one layer: f16 keys and values in buffers that grow by blocks and can be cut back
//! to a prefix (prompt reuse), with the CPU attention over it.

use candle_core::{DType, Tensor};

use super::with_cpu_f32;
use crate::engine::attention;

/// How many KV positions the cache grows by at a time.
const KV_CACHE_BLOCK: usize = 256;

/// Keys and values of one layer, (batch, kv_heads, positions, head_dim), stored as f16 (as llama.cpp
/// does: half the memory, and half the bytes decode attention reads per token), in buffers that grow by
/// blocks. Unlike candle-nn's cache it can be cut back to a prefix, which is what lets a new prompt
/// reuse the positions it shares with the previous one (system prompt, earlier turns).
pub(super) struct KvCache {
    pub(super) k: Option<Tensor>,
    pub(super) v: Option<Tensor>,
    pub(super) len: usize,
}

impl KvCache {
    pub(super) fn new() -> Self {
        Self {
            k: None,
            v: None,
            len: 0,
        }
    }

    pub(super) fn reset(&mut self) {
        *self = Self::new();
    }

    /// Forgets positions from `len` on; the buffers are kept and overwritten by later appends.
    pub(super) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes of the key and value buffers (their capacity).
    pub(super) fn allocated_bytes(&self) -> usize {
        [&self.k, &self.v]
            .into_iter()
            .flatten()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    fn grow(buf: &mut Option<Tensor>, src: &Tensor, needed: usize) -> candle_core::Result<()> {
        let capacity = buf.as_ref().map(|b| b.dim(2)).transpose()?.unwrap_or(0);
        if needed <= capacity {
            return Ok(());
        }
        let new_cap = needed.div_ceil(KV_CACHE_BLOCK) * KV_CACHE_BLOCK;
        let mut shape = src.dims().to_vec();
        shape[2] = new_cap;
        let bigger = Tensor::zeros(shape, DType::F16, src.device())?;
        if let Some(old) = buf.as_ref() {
            bigger.slice_set(old, 2, 0)?;
        }
        *buf = Some(bigger);
        Ok(())
    }

    pub(super) fn buffers(&self) -> candle_core::Result<(&Tensor, &Tensor)> {
        match (&self.k, &self.v) {
            (Some(kb), Some(vb)) => Ok((kb, vb)),
            _ => candle_core::bail!("kv cache buffers missing after grow"),
        }
    }

    /// Stores f32 keys and values of new positions (as f16).
    pub(super) fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let n = k.dim(2)?;
        Self::grow(&mut self.k, k, self.len + n)?;
        Self::grow(&mut self.v, v, self.len + n)?;
        let (kb, vb) = self.buffers()?;
        kb.slice_set(&k.to_dtype(DType::F16)?, 2, self.len)?;
        vb.slice_set(&v.to_dtype(DType::F16)?, 2, self.len)?;
        self.len += n;
        Ok(())
    }

    /// Keys and values of every position as f32, read back from the f16 cache: a prompt attends to the
    /// same rounded values whether its prefix was just computed or reused from an earlier turn, so a
    /// seeded answer does not depend on what the cache held before.
    pub(super) fn all_f32(&self) -> candle_core::Result<(Tensor, Tensor)> {
        let (kb, vb) = self.buffers()?;
        let widen = |b: &Tensor| b.narrow(2, 0, self.len)?.to_dtype(DType::F32);
        Ok((widen(kb)?, widen(vb)?))
    }

    /// Causal attention of the last `rows` cached positions, whose queries `q` are (rows, n_head,
    /// head_dim) values, on the CPU buffers in place (`attention.rs`): one token is decode, several
    /// are a prompt batch, and each row gets the bits it would get as a decode step. `window` limits
    /// each row to its last `window` positions (sliding-window layers).
    pub(super) fn attend_cpu(
        &self,
        q: &Tensor,
        rows: usize,
        n_head: usize,
        head_dim: usize,
        window: Option<usize>,
    ) -> candle_core::Result<Vec<f32>> {
        let (kb, vb) = self.buffers()?;
        let (_, n_kv_head, capacity, _) = kb.dims4()?;
        let mut out = vec![0f32; rows * n_head * head_dim];
        let (ks, kl) = kb.storage_and_layout();
        let (vs, vl) = vb.storage_and_layout();
        let (Some((k0, k1)), Some((v0, v1))) = (kl.contiguous_offsets(), vl.contiguous_offsets())
        else {
            candle_core::bail!("kv cache buffers are not contiguous");
        };
        match (&*ks, &*vs) {
            (candle_core::Storage::Cpu(k), candle_core::Storage::Cpu(v)) => {
                let view = attention::CacheView {
                    n_head,
                    n_kv_head,
                    head_dim,
                    k: &k.as_slice::<half::f16>()?[k0..k1],
                    v: &v.as_slice::<half::f16>()?[v0..v1],
                    capacity,
                    len: self.len,
                    window,
                };
                with_cpu_f32(q, |qs| {
                    if rows == 1 {
                        attention::decode(&view, qs, &mut out);
                    } else {
                        attention::prefill(&view, qs, rows, &mut out);
                    }
                    Ok(())
                })?;
            }
            _ => candle_core::bail!("CPU attention on a non-CPU cache"),
        }
        Ok(out)
    }
}
