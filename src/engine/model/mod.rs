//! The model itself: the GGUF file, the Llama forward pass and its loading, the tokenizer and the chat
//! template.

pub mod chat_template;
pub mod gguf;
pub mod llama;
pub(crate) mod load_phases;
pub mod tokenizer;
