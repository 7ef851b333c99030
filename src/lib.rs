//! novapay: an offline customer-support assistant. Layers, from the bottom: `text` (sentences, words,
//! language), `engine` (the GGUF LLM on candle), `embed`, `memory`, `index` (the knowledge base);
//! `assistant` (the one entry point every door calls: retrieval, the answerability gate, the checks,
//! answered / suggested / handed off); the doors `http`, `mcp`, `integrations`; `eval` and `bench`. The
//! `novapay` binary is a thin CLI over it.

pub mod assistant;
pub mod audit;
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
