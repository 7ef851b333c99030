//! SentencePiece BPE vocabularies (`tokenizer.ggml.model = "llama"`: Gemma, Llama 2, Mistral) rebuilt
//! from the GGUF as a `tokenizers` BPE, the way llama.cpp's `llm_tokenizer_spm` tokenizes them.
//!
//! Such a GGUF has tokens and scores but no merges: llama.cpp starts from the text's characters and
//! repeatedly joins the adjacent pair whose concatenation is the vocabulary token with the highest
//! score. A BPE whose merge list holds every split of every token into two tokens, ranked by the
//! joined token's score, makes the same choices. Spaces are written `▁` (U+2581), a character the
//! vocabulary lacks becomes its UTF-8 bytes' `<0xNN>` tokens, and `add_space_prefix` puts a `▁` in
//! front of the text.

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence};
use tokenizers::{NormalizerWrapper, Tokenizer};

/// GGUF token types that never take part in merges (control, unused, byte tokens).
const TOKEN_TYPE_NORMAL: i64 = 1;

/// The BPE model and normalizer of a SentencePiece vocabulary; the caller adds control and
/// user-defined tokens.
pub(super) fn tokenizer(
    tokens: &[String],
    scores: &[f32],
    types: &[i64],
    add_space_prefix: bool,
    unk: Option<&str>,
) -> Result<Tokenizer, String> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let mergeable =
        |id: usize| types.get(id).copied().unwrap_or(TOKEN_TYPE_NORMAL) == TOKEN_TYPE_NORMAL;
    let mut ranked: Vec<(f32, usize, usize, (String, String))> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if !mergeable(id) {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (a, b) = token.split_at(split);
            let known = |s: &str| vocab.get(s).is_some_and(|i| mergeable(*i as usize));
            if known(a) && known(b) {
                let score = scores.get(id).copied().unwrap_or(0.0);
                ranked.push((score, id, split, (a.to_string(), b.to_string())));
            }
        }
    }
    // Highest score first; a token made from several splits keeps them in text order.
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges: Vec<(String, String)> = ranked.into_iter().map(|r| r.3).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| format!("cannot build BPE from the SentencePiece vocabulary: {e}"))?;
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        steps.push(Prepend::new("\u{2581}".to_string()).into());
    }
    steps.push(
        Replace::new(" ", "\u{2581}")
            .map_err(|e| format!("bad normalizer: {e}"))?
            .into(),
    );
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(Sequence::new(steps)))
        .map_err(|e| format!("bad normalizer: {e}"))?;
    Ok(tokenizer)
}
