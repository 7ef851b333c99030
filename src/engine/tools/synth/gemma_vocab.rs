//! Gemma 3's SentencePiece vocabulary layout at its real size (262,144 tokens), with the control and
//! user-defined tokens at their real ids: `<pad>` `<eos>` `<bos>` `<unk>` `<mask>`, the turn markers
//! 105/106, runs of newlines, spaces and tabs as user-defined tokens, the 256 `<0xNN>` byte tokens
//! from id 238, then scored pieces. The pieces are not Gemma's (those cannot be downloaded here): the
//! support words of `vocab.rs` spelled with and without a leading `▁`, single characters (Latin,
//! Cyrillic, digits, currency signs, one emoji) and filler tokens, scored as SentencePiece scores them
//! (higher = merged first). Text outside them (most emoji) falls back to byte tokens.

use std::collections::HashSet;

use super::vocab::WORDS;

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

pub const GEMMA3_VOCAB: usize = 262_144;
pub const GEMMA3_PAD: u32 = 0;
pub const GEMMA3_EOS: u32 = 1;
pub const GEMMA3_BOS: u32 = 2;
pub const GEMMA3_UNK: u32 = 3;
pub const GEMMA3_START_OF_TURN: u32 = 105;
pub const GEMMA3_END_OF_TURN: u32 = 106;
/// First of the 256 byte tokens.
const FIRST_BYTE: usize = 238;
/// Where the single characters start (after the word pieces and fillers), as in Gemma's vocabulary
/// where they come last among the scored pieces.
const FIRST_CHAR: usize = 236_000;
/// Runs of tabs, then the image markers and the remaining `<unusedN>` control tokens.
const FIRST_TAB_RUN: usize = 255_968;

pub struct SentencePieceVocabulary {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

impl SentencePieceVocabulary {
    fn push(&mut self, token: String, score: f32, kind: i32) {
        self.tokens.push(token);
        self.scores.push(score);
        self.types.push(kind);
    }

    /// A scored piece: SentencePiece scores pieces by their order, the first highest.
    fn piece(&mut self, token: String) {
        let score = -((self.tokens.len() - FIRST_BYTE - 256) as f32);
        self.push(token, score, NORMAL);
    }

    /// Filler pieces up to id `n`, named by their id.
    fn fill_to(&mut self, n: usize) {
        while self.tokens.len() < n {
            self.piece(format!("<filler_{:06}>", self.tokens.len()));
        }
    }
}

/// Single characters of the vocabulary: `▁`, printable ASCII, Cyrillic, currency signs and one emoji.
fn characters() -> Vec<char> {
    let mut chars: Vec<char> = vec!['\u{2581}'];
    chars.extend((0x21u8..=0x7e).map(char::from));
    chars.extend('А'..='я');
    chars.extend(['ё', 'Ё', '€', '₽', '£', '¥', '№', '«', '»', '—', '…', '😀']);
    chars
}

pub fn gemma3() -> SentencePieceVocabulary {
    let mut v = SentencePieceVocabulary {
        tokens: Vec::with_capacity(GEMMA3_VOCAB),
        scores: Vec::with_capacity(GEMMA3_VOCAB),
        types: Vec::with_capacity(GEMMA3_VOCAB),
    };
    for t in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] {
        v.push(t.to_string(), -1000.0, CONTROL);
    }
    v.push("[multimodal]".to_string(), -1000.0, USER_DEFINED);
    for i in 0..99 {
        v.push(format!("<unused{i}>"), -1000.0, CONTROL);
    }
    v.push("<start_of_turn>".to_string(), -1000.0, CONTROL);
    v.push("<end_of_turn>".to_string(), -1000.0, CONTROL);
    for n in 1..=31 {
        v.push("\n".repeat(n), -1000.0, USER_DEFINED);
    }
    for n in 2..=31 {
        v.push(" ".repeat(n), -1000.0, USER_DEFINED);
    }
    let mut tag = 0;
    while v.tokens.len() < FIRST_BYTE {
        v.push(format!("<tag{tag}>"), -1000.0, USER_DEFINED);
        tag += 1;
    }
    for b in 0..=255u8 {
        v.push(format!("<0x{b:02X}>"), 0.0, BYTE);
    }
    let mut known: HashSet<String> = HashSet::new();
    for word in WORDS {
        for spelled in [format!("\u{2581}{word}"), word.to_string()] {
            let chars: Vec<char> = spelled.chars().collect();
            for end in 2..=chars.len() {
                let prefix: String = chars[..end].iter().collect();
                if known.insert(prefix.clone()) {
                    v.piece(prefix);
                }
            }
        }
    }
    v.fill_to(FIRST_CHAR);
    let mut seen = HashSet::new();
    for c in characters() {
        if seen.insert(c) {
            v.piece(c.to_string());
        }
    }
    v.fill_to(FIRST_TAB_RUN);
    for n in 1..=31 {
        v.push("\t".repeat(n), -1000.0, USER_DEFINED);
    }
    v.push("<start_of_image>".to_string(), -1000.0, CONTROL);
    v.push("<end_of_image>".to_string(), -1000.0, CONTROL);
    let mut unused = 99;
    while v.tokens.len() < GEMMA3_VOCAB {
        v.push(format!("<unused{unused}>"), -1000.0, CONTROL);
        unused += 1;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_tokens_are_at_gemma3s_ids() {
        let v = gemma3();
        assert_eq!(v.tokens.len(), GEMMA3_VOCAB);
        assert_eq!(v.scores.len(), GEMMA3_VOCAB);
        let set: HashSet<&str> = v.tokens.iter().map(|s| s.as_str()).collect();
        assert_eq!(set.len(), GEMMA3_VOCAB, "tokens are unique");
        assert_eq!(v.tokens[GEMMA3_BOS as usize], "<bos>");
        assert_eq!(v.tokens[GEMMA3_EOS as usize], "<eos>");
        assert_eq!(v.tokens[GEMMA3_START_OF_TURN as usize], "<start_of_turn>");
        assert_eq!(v.tokens[GEMMA3_END_OF_TURN as usize], "<end_of_turn>");
        assert_eq!(v.tokens[107], "\n");
        assert_eq!(v.tokens[138], "  ");
        assert_eq!(v.tokens[256], "<0x12>");
        assert!(v.tokens[FIRST_TAB_RUN - 1].starts_with("<filler_"));
        assert_eq!(v.tokens[255_999], "<start_of_image>");
        assert_eq!(v.tokens[GEMMA3_VOCAB - 1], "<unused6241>");
    }
}
