//! The LLM engine on real and generated GGUFs: generation, Llama 3.2's, Qwen2.5's and Gemma 3's
//! architectures against llama.cpp,
//! the tokenizer, chat templates, the worker thread, and bad model files.

mod batch;
pub mod generation;
mod model_files;
mod scheduler;
mod synth_gemma3;
mod synth_llama;
mod synth_qwen2;
mod templates;
mod tokenizer;
mod worker;

use std::ops::ControlFlow;

use novapay::engine::{ChatMessage, Llm, Role, SamplingParams};

/// Each question's greedy answer generated alone, the conversation forgotten between them: what a
/// batched run must reproduce.
pub fn single_stream_answers(
    llm: &mut Llm,
    questions: &[&str],
    params: &SamplingParams,
) -> Vec<String> {
    questions
        .iter()
        .map(|q| {
            llm.forget();
            let prompt = llm
                .encode_chat(&[ChatMessage::new(Role::User, *q)])
                .unwrap();
            let mut text = String::new();
            llm.generate(&prompt, params, &|| false, &mut |t| {
                text.push_str(t);
                ControlFlow::Continue(())
            })
            .unwrap();
            text
        })
        .collect()
}
