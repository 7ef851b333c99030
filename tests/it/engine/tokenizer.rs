//! The tokenizer built from the GGUF matches llama.cpp on the fixture, takes its special tokens from
//! the metadata, and refuses a pre-tokenizer it does not know.

use novapay::engine::gguf::GgufFile;
use novapay::engine::tokenizer::LlmTokenizer;

use crate::{fixture, smollm2_path};

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Token ids from the GGUF-built tokenizer equal llama.cpp's on the committed fixture, both with control
/// tokens parsed (template text) and as plain text (customer text).
#[test]
fn gguf_tokenizer_matches_llama_cpp_on_fixture() {
    let gguf = GgufFile::open(&smollm2_path()).unwrap();
    let tok = LlmTokenizer::from_gguf(&gguf).unwrap();
    let fx = fixture("smollm2_tokenizer.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = tok.encode(text, true).unwrap();
        if got != want {
            failures.push(format!("special {text:?}: got {got:?}, llama.cpp {want:?}"));
        }
        let want_plain = ids_of(&case["ids_plain"]);
        let got_plain = tok.encode(text, false).unwrap();
        if got_plain != want_plain {
            failures.push(format!(
                "plain {text:?}: got {got_plain:?}, llama.cpp {want_plain:?}"
            ));
        }
        // Decoding gives the text back (byte-level BPE is lossless).
        assert_eq!(tok.decode(&got_plain), text, "round trip of {text:?}");
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_special_tokens_come_from_metadata() {
    let gguf = GgufFile::open(&smollm2_path()).unwrap();
    let tok = LlmTokenizer::from_gguf(&gguf).unwrap();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(tok.eos, Some(im_end));
    assert!(tok.stop_ids.contains(&im_end));
    assert!(!tok.add_bos);
    assert!(tok.is_control(tok.token_id("<|im_start|>").unwrap()));
    assert_eq!(
        tok.output_bytes(im_end),
        b"",
        "control tokens print nothing"
    );
}

#[test]
fn unknown_pre_tokenizer_is_an_error_not_a_silent_default() {
    // A GGUF whose header names a pre-tokenizer we have no regex for.
    let mut gguf = GgufFile::open(&smollm2_path()).unwrap();
    gguf.content.metadata.insert(
        "tokenizer.ggml.pre".into(),
        candle_core::quantized::gguf_file::Value::String("mystery".into()),
    );
    let err = LlmTokenizer::from_gguf(&gguf).err().expect("must fail");
    assert!(err.to_string().contains("mystery"), "{err}");
}
