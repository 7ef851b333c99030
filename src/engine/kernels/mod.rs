//! The CPU kernels the model's forward pass runs on: the packed int8 matmuls (AVX-512 VNNI), attention,
//! the parallel scheduler and its spinning pool, and the on-disk cache of repacked weights.

pub mod attention;
pub mod packed;
pub mod parallel;
pub mod spin_pool;
pub mod tile_cache;
