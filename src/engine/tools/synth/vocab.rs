//! The synthetic files' byte-level BPE vocabularies, at the real models' sizes and with their control
//! tokens at the real ids: the 256 bytes, merges that spell common support words (so text becomes
//! multi-byte tokens as with a trained vocabulary), filler tokens, then the family's control tokens.
//! The merges are not the real models' (those cannot be downloaded here): the tokenizer tests on these
//! files check the pre-tokenizer, the BPE mechanics and the control tokens against llama.cpp, not the
//! trained merges.

use std::collections::HashSet;

/// GGUF `tokenizer.ggml.token_type` values.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

pub struct Vocabulary {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub types: Vec<i32>,
}

/// Words the merges spell out (with and without a leading space), so that ordinary English and Russian
/// support text becomes multi-byte tokens as with the real vocabulary.
pub(super) const WORDS: &[&str] = &[
    "the",
    "and",
    "to",
    "of",
    "a",
    "in",
    "is",
    "for",
    "you",
    "your",
    "on",
    "with",
    "that",
    "are",
    "be",
    "can",
    "transfer",
    "transfers",
    "card",
    "account",
    "fee",
    "limit",
    "day",
    "per",
    "money",
    "payment",
    "bank",
    "support",
    "international",
    "domestic",
    "business",
    "how",
    "what",
    "my",
    "it",
    "this",
    "up",
    "days",
    "take",
    "send",
    "verified",
    "I",
    "The",
    "How",
    "What",
    "NovaPay",
    "ing",
    "ed",
    "er",
    "es",
    "re",
    "on",
    "at",
    "an",
    "or",
    "st",
    "al",
    "ation",
    "ment",
    "ly",
    "перевод",
    "карта",
    "комиссия",
    "счёт",
    "как",
    "для",
    "не",
    "на",
    "по",
    "что",
];

/// Numbers Qwen2's vocabulary has no single token for (its pre-tokenizer splits every digit) but a
/// tokenizer with Llama 3's `\p{N}{1,3}` split would merge: they make a wrong digit split visible.
const NUMBERS: &[&str] = &["00", "000", "12", "2025", "4111", "45", "18", "03"];

/// The bytes, then every prefix of every word (each merge's result is a token, as the tokenizer
/// requires), with and without a leading space.
fn spelled(words: &[&str]) -> (Vec<String>, Vec<String>) {
    let table = crate::engine::tokenizer::byte_level_chars();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    let mut known: HashSet<String> = tokens.iter().cloned().collect();
    let mut merges = Vec::new();
    for word in words {
        for spelled in [word.to_string(), format!(" {word}")] {
            let chars: Vec<String> = spelled
                .bytes()
                .map(|b| table[b as usize].to_string())
                .collect();
            let mut prefix = chars[0].clone();
            for c in &chars[1..] {
                let merged = format!("{prefix}{c}");
                if known.insert(merged.clone()) {
                    merges.push(format!("{prefix} {c}"));
                    tokens.push(merged.clone());
                }
                prefix = merged;
            }
        }
    }
    (tokens, merges)
}

fn fill(tokens: &mut Vec<String>, n_text: usize) {
    let mut i = 0;
    while tokens.len() < n_text {
        tokens.push(format!("<filler_{i:06}>"));
        i += 1;
    }
}

/// Llama 3's vocabulary size; its last 256 ids are control tokens.
pub const LLAMA3_VOCAB: usize = 128_256;
const LLAMA3_CONTROL: usize = 256;
pub const LLAMA3_BOS: u32 = 128_000;
pub const LLAMA3_EOT: u32 = 128_009;

/// Llama 3's 128,256 tokens: 128,000 text tokens, then `<|begin_of_text|>` and the other control
/// tokens.
pub fn llama3() -> Vocabulary {
    let (mut tokens, merges) = spelled(WORDS);
    let n_text = LLAMA3_VOCAB - LLAMA3_CONTROL;
    fill(&mut tokens, n_text);
    let mut control: Vec<String> = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut r = 3;
    while control.len() < LLAMA3_CONTROL {
        control.push(format!("<|reserved_special_token_{r}|>"));
        r += 1;
    }
    tokens.extend(control);
    // Filler tokens are "user defined" in spirit but must not be matched in text: keep them normal.
    let types = (0..LLAMA3_VOCAB)
        .map(|i| if i < n_text { NORMAL } else { CONTROL })
        .collect();
    Vocabulary {
        tokens,
        merges,
        types,
    }
}

/// Qwen2 / Qwen2.5's embedding rows: 151,643 text tokens, 22 added tokens, then padding rows.
pub const QWEN2_VOCAB: usize = 151_936;
const QWEN2_TEXT: usize = 151_643;
pub const QWEN2_ENDOFTEXT: u32 = 151_643;
pub const QWEN2_IM_START: u32 = 151_644;
pub const QWEN2_IM_END: u32 = 151_645;

/// Qwen2.5's added tokens from id 151,643, in order; `<tool_call>` and `</tool_call>` are not special
/// in its tokenizer.json, so llama.cpp's converter makes them user-defined, the rest control.
const QWEN2_ADDED: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// Qwen2.5's 151,936 rows: text tokens (with the multi-digit tokens of `NUMBERS`), the added tokens at
/// their real ids, and the `[PADn]` rows llama.cpp's converter writes as unused.
pub fn qwen2() -> Vocabulary {
    let words: Vec<&str> = WORDS.iter().chain(NUMBERS).copied().collect();
    let (mut tokens, merges) = spelled(&words);
    fill(&mut tokens, QWEN2_TEXT);
    let mut types = vec![NORMAL; QWEN2_TEXT];
    for t in QWEN2_ADDED {
        tokens.push(t.to_string());
        types.push(if t.starts_with("<|") {
            CONTROL
        } else {
            USER_DEFINED
        });
    }
    while tokens.len() < QWEN2_VOCAB {
        tokens.push(format!("[PAD{}]", tokens.len()));
        types.push(UNUSED);
    }
    Vocabulary {
        tokens,
        merges,
        types,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: &Vocabulary, size: usize) {
        assert_eq!(v.tokens.len(), size);
        assert_eq!(v.types.len(), size);
        let set: HashSet<&str> = v.tokens.iter().map(|s| s.as_str()).collect();
        assert_eq!(set.len(), size, "tokens are unique");
        for m in &v.merges {
            let (a, b) = m.split_once(' ').expect("merge has two parts");
            assert!(set.contains(a) && set.contains(b) && set.contains(format!("{a}{b}").as_str()));
        }
    }

    #[test]
    fn every_merge_result_is_in_the_vocabulary() {
        let v = llama3();
        check(&v, LLAMA3_VOCAB);
        assert_eq!(v.tokens[LLAMA3_BOS as usize], "<|begin_of_text|>");
        assert_eq!(v.tokens[LLAMA3_EOT as usize], "<|eot_id|>");
        let v = qwen2();
        check(&v, QWEN2_VOCAB);
        assert_eq!(v.tokens[QWEN2_ENDOFTEXT as usize], "<|endoftext|>");
        assert_eq!(v.tokens[QWEN2_IM_START as usize], "<|im_start|>");
        assert_eq!(v.tokens[QWEN2_IM_END as usize], "<|im_end|>");
        assert_eq!(v.tokens[151_664], "<|file_sep|>");
        assert_eq!(v.types[151_657], USER_DEFINED, "<tool_call>");
        assert_eq!(v.types[QWEN2_VOCAB - 1], UNUSED);
    }
}
