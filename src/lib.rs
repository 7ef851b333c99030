//! novapay: an offline customer-support assistant. The library holds the engine (LLM and embedder on
//! candle), model resolution and download; the `novapay` binary is a thin CLI over it.

pub mod assistant;
pub mod bench;
pub mod device;
pub mod embed;
pub mod engine;
pub mod eval;
pub mod http;
pub mod index;
pub mod integrations;
pub mod logsafe;
pub mod mcp;
pub mod memory;
pub mod models;
pub mod text;
pub mod threads;
