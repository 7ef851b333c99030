//! The knowledge base: indexing and search, documents managed without a restart, index generations
//! across processes, and retrieval quality on a public set.

mod beir;
mod documents;
mod index_generations;
pub mod knowledge_base;
