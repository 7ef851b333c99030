//! The LLM's tokenizer: loaded from a `tokenizer.json` when one is given, otherwise rebuilt from the GGUF
//! metadata alone (tokens, merges, token types and the pre-tokenizer llama.cpp names in
//! `tokenizer.ggml.pre`; SentencePiece vocabularies from their scores, `sentencepiece.rs`), so that
//! token ids match llama.cpp's for the same file.
//!
//! Two encoders are kept: one parses control tokens such as `<|im_start|>` (for the chat template's own
//! text), the other treats them as plain text (for what a customer typed), so a customer cannot inject
//! turn markers into the prompt.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::engine::gguf::GgufFile;
use crate::engine::EngineError;

mod sentencepiece;

/// llama.cpp's `llama-vocab.cpp` split regexes for the `tokenizer.ggml.pre` values we support.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with numbers split one digit at a time (`\p{N}` where Llama 3 has `\p{N}{1,3}`).
const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// End-of-generation markers llama.cpp also stops on when the metadata does not name them.
const END_OF_TURN_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
];

pub struct LlmTokenizer {
    with_control: Tokenizer,
    plain: Tokenizer,
    /// Raw bytes each token stands for; byte-level tokens may hold part of a UTF-8 character.
    token_bytes: Vec<Vec<u8>>,
    control: HashSet<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub stop_ids: HashSet<u32>,
}

impl LlmTokenizer {
    /// Builds the tokenizer from the GGUF's `tokenizer.ggml.*` metadata: byte-level BPE (`gpt2`) or
    /// SentencePiece BPE (`llama`) vocabularies.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, EngineError> {
        let bad = |reason: String| EngineError::BadModel {
            path: gguf.path.clone(),
            reason,
        };
        let model = gguf.get_str("tokenizer.ggml.model").unwrap_or("");
        match model {
            "gpt2" => Self::byte_level_from_gguf(gguf),
            "llama" => Self::sentencepiece_from_gguf(gguf),
            other => Err(bad(format!(
                "the GGUF's tokenizer type is `{other}`; only BPE (`gpt2`) and SentencePiece \
                 (`llama`) vocabularies can be built from GGUF metadata: pass the model's \
                 tokenizer.json with --llm-tokenizer"
            ))),
        }
    }

    /// SentencePiece BPE with byte fallback (Gemma): merges from the scores, spaces as `▁`.
    fn sentencepiece_from_gguf(gguf: &GgufFile) -> Result<Self, EngineError> {
        let bad = |reason: String| EngineError::BadModel {
            path: gguf.path.clone(),
            reason,
        };
        let tokens = gguf.string_array("tokenizer.ggml.tokens")?;
        let scores = gguf
            .f32_array("tokenizer.ggml.scores")
            .ok_or_else(|| gguf.missing("tokenizer.ggml.scores"))?;
        let types = gguf
            .int_array("tokenizer.ggml.token_type")
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let add_space_prefix = gguf
            .get_bool("tokenizer.ggml.add_space_prefix")
            .unwrap_or(true);
        let unk = gguf
            .get_u32("tokenizer.ggml.unknown_token_id")
            .and_then(|id| tokens.get(id as usize))
            .map(|s| s.as_str());
        let tokenizer = sentencepiece::tokenizer(&tokens, &scores, &types, add_space_prefix, unk)
            .map_err(bad)?;
        let token_bytes = sentencepiece_token_bytes(&tokens);
        // llama.cpp matches user-defined tokens (Gemma's runs of newlines and spaces) in the raw
        // text, before spaces become `▁`.
        Self::with_special_tokens(gguf, tokenizer, &tokens, &types, token_bytes, false)
    }

    fn byte_level_from_gguf(gguf: &GgufFile) -> Result<Self, EngineError> {
        let bad = |reason: String| EngineError::BadModel {
            path: gguf.path.clone(),
            reason,
        };
        let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let (patterns, ignore_merges): (&[&str], bool) = match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
                (&[LLAMA3_PATTERN], true)
            }
            // llama.cpp keeps the merges for Qwen2 (no `ignore_merges`, unlike Llama 3).
            "qwen2" | "deepseek-r1-qwen" => (&[QWEN2_PATTERN], false),
            "smollm" => (&[r"\p{N}", GPT2_PATTERN], false),
            "gpt-2" | "phi-2" => (&[GPT2_PATTERN], false),
            other => {
                return Err(bad(format!(
                "unsupported pre-tokenizer `tokenizer.ggml.pre = {other}` (supported: llama-bpe, \
                     llama3, qwen2, smollm, gpt-2); pass the model's tokenizer.json with --llm-tokenizer"
            )))
            }
        };
        let tokens = gguf.string_array("tokenizer.ggml.tokens")?;
        let merges = gguf.string_array("tokenizer.ggml.merges")?;
        let types = gguf
            .int_array("tokenizer.ggml.token_type")
            .unwrap_or_else(|| vec![1; tokens.len()]);

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), id as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| bad(format!("cannot build BPE from GGUF vocabulary: {e}")))?;

        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for p in patterns {
            let split = Split::new(
                SplitPattern::Regex((*p).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| bad(format!("bad split regex: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, true, false).into());

        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(steps)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let control: HashSet<u32> = types
            .iter()
            .enumerate()
            .filter(|(_, kind)| **kind == TOKEN_TYPE_CONTROL)
            .map(|(id, _)| id as u32)
            .collect();
        let token_bytes = byte_level_token_bytes(&tokens, &control);
        Self::with_special_tokens(gguf, tokenizer, &tokens, &types, token_bytes, true)
    }

    /// Adds the control tokens (parsed only in template text) and user-defined tokens (always
    /// matched), and reads BOS/EOS and the stop tokens from the GGUF.
    fn with_special_tokens(
        gguf: &GgufFile,
        mut tokenizer: Tokenizer,
        tokens: &[String],
        types: &[i64],
        token_bytes: Vec<Vec<u8>>,
        normalized_user_tokens: bool,
    ) -> Result<Self, EngineError> {
        let bad = |reason: String| EngineError::BadModel {
            path: gguf.path.clone(),
            reason,
        };
        let mut control = HashSet::new();
        let mut special_tokens = Vec::new();
        let mut user_tokens = Vec::new();
        for (id, kind) in types.iter().enumerate() {
            match *kind {
                TOKEN_TYPE_CONTROL => {
                    control.insert(id as u32);
                    special_tokens.push(AddedToken::from(tokens[id].clone(), true));
                }
                TOKEN_TYPE_USER_DEFINED => user_tokens.push(
                    AddedToken::from(tokens[id].clone(), false).normalized(normalized_user_tokens),
                ),
                _ => {}
            }
        }
        tokenizer
            .add_special_tokens(special_tokens)
            .map_err(|e| bad(format!("cannot add control tokens: {e}")))?;
        tokenizer
            .add_tokens(user_tokens)
            .map_err(|e| bad(format!("cannot add user-defined tokens: {e}")))?;

        let bos = gguf.get_u32("tokenizer.ggml.bos_token_id");
        let eos = gguf.get_u32("tokenizer.ggml.eos_token_id");
        let add_bos = gguf
            .get_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(false);
        let mut stop_ids: HashSet<u32> = eos.into_iter().collect();
        if let Some(eot) = gguf.get_u32("tokenizer.ggml.eot_token_id") {
            stop_ids.insert(eot);
        }
        Ok(Self::assemble(
            tokenizer,
            token_bytes,
            control,
            bos,
            eos,
            add_bos,
            stop_ids,
        ))
    }

    /// Loads a `tokenizer.json`; BOS/EOS and the BOS policy still come from the GGUF when present, since
    /// the GGUF is what the model was converted with.
    pub fn from_file(path: &Path, gguf: Option<&GgufFile>) -> Result<Self, EngineError> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| EngineError::BadModel {
            path: path.to_path_buf(),
            reason: format!("cannot read tokenizer.json: {e}"),
        })?;
        let vocab_size = tokenizer.get_vocab_size(true);
        let tokens: Vec<String> = (0..vocab_size as u32)
            .map(|id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        let control: HashSet<u32> = tokenizer
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        let byte_level = tokenizer
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .is_some_and(|s| s.contains("ByteLevel"));
        let token_bytes = if byte_level {
            byte_level_token_bytes(&tokens, &control)
        } else {
            sentencepiece_token_bytes(&tokens)
        };
        let by_name = |name: &str| tokenizer.token_to_id(name);
        let bos = gguf
            .and_then(|g| g.get_u32("tokenizer.ggml.bos_token_id"))
            .or_else(|| by_name("<|begin_of_text|>"))
            .or_else(|| by_name("<s>"));
        let eos = gguf
            .and_then(|g| g.get_u32("tokenizer.ggml.eos_token_id"))
            .or_else(|| by_name("<|end_of_text|>"))
            .or_else(|| by_name("</s>"));
        let add_bos = gguf
            .and_then(|g| g.get_bool("tokenizer.ggml.add_bos_token"))
            .unwrap_or(bos.is_some());
        let stop_ids: HashSet<u32> = eos.into_iter().collect();
        Ok(Self::assemble(
            tokenizer,
            token_bytes,
            control,
            bos,
            eos,
            add_bos,
            stop_ids,
        ))
    }

    fn assemble(
        with_control: Tokenizer,
        token_bytes: Vec<Vec<u8>>,
        control: HashSet<u32>,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        mut stop_ids: HashSet<u32>,
    ) -> Self {
        for name in END_OF_TURN_NAMES {
            if let Some(id) = with_control.token_to_id(name) {
                if control.contains(&id) {
                    stop_ids.insert(id);
                }
            }
        }
        let mut plain = with_control.clone();
        plain.set_encode_special_tokens(true);
        Self {
            with_control,
            plain,
            token_bytes,
            control,
            bos,
            eos,
            add_bos,
            stop_ids,
        }
    }

    /// Token ids of `text`, no BOS. With `parse_control`, control-token strings in the text become their
    /// ids (template text); without, they are ordinary text (user content).
    pub fn encode(&self, text: &str, parse_control: bool) -> Result<Vec<u32>, EngineError> {
        let tokenizer = if parse_control {
            &self.with_control
        } else {
            &self.plain
        };
        let encoding = tokenizer
            .encode_fast(text, false)
            .map_err(|e| EngineError::Internal(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The bytes a token contributes to the output; control tokens contribute nothing.
    pub fn output_bytes(&self, id: u32) -> &[u8] {
        if self.control.contains(&id) {
            return &[];
        }
        self.token_bytes
            .get(id as usize)
            .map(|b| b.as_slice())
            .unwrap_or(&[])
    }

    /// The token's vocabulary string, as the model file spells it (for `novapay tokenize`).
    pub fn piece(&self, id: u32) -> String {
        self.with_control.id_to_token(id).unwrap_or_default()
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.with_control.token_to_id(text)
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.control.contains(&id)
    }

    /// Decodes whole token sequences (lossy on a trailing partial character).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|id| self.output_bytes(*id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// GPT-2's byte-level alphabet: the printable char each byte is written as in a byte-level BPE
/// vocabulary (index = byte).
pub(crate) fn byte_level_chars() -> Vec<char> {
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bytes.into_iter().zip(chars) {
        table[b as usize] = char::from_u32(c).expect("byte-level chars are valid");
    }
    table
}

/// The inverse of [`byte_level_chars`]: tokens are strings of those chars.
fn byte_level_decode_table() -> HashMap<char, u8> {
    byte_level_chars()
        .into_iter()
        .enumerate()
        .map(|(b, c)| (c, b as u8))
        .collect()
}

fn byte_level_token_bytes(tokens: &[String], control: &HashSet<u32>) -> Vec<Vec<u8>> {
    let table = byte_level_decode_table();
    tokens
        .iter()
        .enumerate()
        .map(|(id, token)| {
            if control.contains(&(id as u32)) {
                return token.as_bytes().to_vec();
            }
            let decoded: Option<Vec<u8>> = token.chars().map(|c| table.get(&c).copied()).collect();
            // Added tokens are stored as plain text, not in the byte alphabet.
            decoded.unwrap_or_else(|| token.as_bytes().to_vec())
        })
        .collect()
}

/// SentencePiece-style vocabularies: `▁` is a space and `<0xNN>` a raw byte.
fn sentencepiece_token_bytes(tokens: &[String]) -> Vec<Vec<u8>> {
    tokens
        .iter()
        .map(|t| {
            if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                if let Ok(b) = u8::from_str_radix(&t[3..5], 16) {
                    return vec![b];
                }
            }
            t.replace('\u{2581}', " ").into_bytes()
        })
        .collect()
}
