//! The engine at Qwen2.5's architecture (`qwen2`: Llama's decoder with Q/K/V biases and NeoX RoPE), on
//! tiny generated GGUFs (`novapay synth-gguf --arch qwen2`): logits equal llama.cpp's and an exact
//! reference's on the committed fixture, token ids equal llama.cpp's (Qwen2's digit-by-digit
//! pre-tokenizer), the GGUF's ChatML template is what prompts are built with, a split prompt gives the
//! same bits, and a file without its biases is refused by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use novapay::engine::arch::Architecture;
use novapay::engine::synth::{self, Quant, Shape, SynthSpec};
use novapay::engine::{ChatMessage, Llm, LlmOptions, Role};

use super::synth_llama::{check_parity_of, ids, load_err, rewrite, sha256};
use crate::fixture;

const SEED: u64 = 7;
const FIXTURE: &str = "qwen2_llama_cpp_parity.json";

/// Each tiny Qwen2 model is generated once per test run.
fn tiny_qwen2(quant: &str) -> PathBuf {
    static MADE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    made.entry(quant.to_string())
        .or_insert_with(|| {
            let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("tiny-qwen2-{quant}-{SEED}.gguf"));
            let spec = SynthSpec {
                arch: Architecture::Qwen2,
                shape: Shape::TINY,
                quant: quant.parse::<Quant>().unwrap(),
                seed: SEED,
            };
            synth::write_synthetic_gguf(&spec, &path).expect("tiny qwen2 model is written");
            path
        })
        .clone()
}

#[test]
fn qwen2_synthetic_ggufs_are_the_files_the_fixture_was_made_on() {
    let fx = fixture(FIXTURE);
    for q in ["q4_k", "q6_k", "q8_0"] {
        assert_eq!(
            sha256(&tiny_qwen2(q)),
            fx["models"][q]["sha256"].as_str().unwrap(),
            "{q}: the generator no longer makes the file llama.cpp's logits were taken on"
        );
    }
}

/// The prompt and the tokenizer fixture's strings (English, Russian, digits, currency, emoji), with
/// control tokens parsed and as plain text, give llama.cpp's ids. The vocabulary is synthetic (bytes,
/// support words and a few multi-digit tokens, at Qwen2.5's size and control ids), so this checks the
/// `qwen2` pre-tokenizer, BPE and control tokens, not Qwen's trained merges.
#[test]
fn qwen2_tokenizer_matches_llama_cpp() {
    let fx = fixture(FIXTURE);
    let llm = Llm::load(&LlmOptions::new(tiny_qwen2("q8_0"))).unwrap();
    let tok = &llm.tokenizer;
    assert!(!tok.add_bos, "Qwen2.5 adds no BOS");
    let got = tok.encode(fx["prompt"].as_str().unwrap(), true).unwrap();
    let want = ids(&fx["ids"]);
    assert_eq!(&got[..want.len()], &want[..]);
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
    // Digits one at a time: the vocabulary has a `2025` token that Llama 3's split would use.
    let year = tok.encode("2025", false).unwrap();
    assert_eq!(year.len(), 4, "{year:?}");
    assert!(tok.token_id("2025").is_some());
}

#[test]
fn qwen2_logits_match_reference_and_llama_cpp_q4_k() {
    check_parity_of(&fixture(FIXTURE), "q4_k", &tiny_qwen2("q4_k"));
}

#[test]
fn qwen2_logits_match_reference_and_llama_cpp_q6_k() {
    check_parity_of(&fixture(FIXTURE), "q6_k", &tiny_qwen2("q6_k"));
}

#[test]
fn qwen2_logits_match_reference_and_llama_cpp_q8_0() {
    check_parity_of(&fixture(FIXTURE), "q8_0", &tiny_qwen2("q8_0"));
}

/// The GGUF's own template (Qwen2.5's ChatML, with its default system turn) renders the prompt; its
/// markers become control tokens, a customer's typed markers stay text, and generation stops at
/// `<|im_end|>`.
#[test]
fn qwen2_prompt_is_the_ggufs_chatml_template() {
    let llm = Llm::load(&LlmOptions::new(tiny_qwen2("q8_0"))).unwrap();
    assert_eq!(llm.template.name, "gguf");
    assert_eq!(llm.config().architecture, Architecture::Qwen2);
    let question = "Как заблокировать карту? <|im_end|>";
    let messages = [ChatMessage::new(Role::User, question)];
    let text = llm.template.render(&messages, true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\
         <|im_end|>\n<|im_start|>user\nКак заблокировать карту? <|im_end|><|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let ids = llm
        .template
        .encode(&llm.tokenizer, &messages, true)
        .unwrap();
    let count = |id: u32| ids.iter().filter(|t| **t == id).count();
    assert_eq!(
        ids[0],
        synth::QWEN2_IM_START,
        "no BOS, the template's first marker"
    );
    assert_eq!(count(synth::QWEN2_IM_START), 3);
    assert_eq!(count(synth::QWEN2_IM_END), 2, "the typed marker is text");
    assert!(llm.tokenizer.stop_ids.contains(&synth::QWEN2_IM_END));
    assert!(llm.tokenizer.stop_ids.contains(&synth::QWEN2_ENDOFTEXT));
}

/// Qwen2 runs through the same packed kernels and prefix reuse as Llama: a token's logits are the same
/// bits however the prompt is split.
#[test]
fn qwen2_prompt_logits_do_not_depend_on_how_the_prompt_is_split() {
    if !crate::engine::generation::split_invariance_guaranteed() {
        return;
    }
    let fx = fixture(FIXTURE);
    let prompt = ids(&fx["ids"]);
    let mut other = prompt[..20].to_vec();
    other.extend(prompt[20..].iter().rev().take(30));
    let mut llm = Llm::load(&LlmOptions::new(tiny_qwen2("q4_k"))).unwrap();
    assert!(
        llm.config().weight_types.contains("Q4K"),
        "{}",
        llm.config().weight_types
    );
    crate::engine::generation::assert_logits_independent_of_the_split(&mut llm, &prompt, &other);
}

#[test]
fn qwen2_file_without_its_qkv_biases_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-bias.gguf");
    rewrite(
        &tiny_qwen2("q8_0"),
        &path,
        |_| {},
        |tensors| tensors.retain(|(n, _)| n != "blk.1.attn_k.bias"),
    );
    let msg = load_err(&path);
    assert!(msg.contains("blk.1.attn_k.bias"), "{msg}");
}

#[test]
fn qwen2_hyperparameters_are_read_under_the_qwen2_prefix() {
    // The same file with its keys renamed to `llama.`: the qwen2 loader must not find them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-keys.gguf");
    rewrite(
        &tiny_qwen2("q8_0"),
        &path,
        |meta| {
            for (k, _) in meta.iter_mut() {
                if let Some(rest) = k.strip_prefix("qwen2.") {
                    *k = format!("llama.{rest}");
                }
            }
        },
        |_| {},
    );
    let msg = load_err(&path);
    assert!(msg.contains("qwen2.attention.head_count"), "{msg}");
}
