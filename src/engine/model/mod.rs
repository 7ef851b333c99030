//! The model itself: the GGUF file, the supported architectures, the decoder forward pass and its
//! loading, the tokenizer and the chat template.

pub mod arch;
pub mod chat_template;
pub mod gguf;
pub mod llama;
pub(crate) mod load_phases;
pub mod tokenizer;
