use novapay::embed::{Embedder, EmbedderOptions, Pooling};

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
