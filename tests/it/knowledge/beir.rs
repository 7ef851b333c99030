//! Retrieval quality on a public set: BM25 on SciFact through the BEIR evaluation code, near the
//! published figure.

use std::path::PathBuf;

use novapay::eval::beir::{self, Mode};

/// BM25 on SciFact through the same BEIR evaluation code the dense numbers use; the published BEIR
/// BM25 figure is 0.665 (Elasticsearch, multifield) and Anserini's flat one 0.679.
#[test]
fn bm25_on_scifact_is_near_the_published_figure() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/scifact");
    assert!(
        dir.join("corpus.jsonl").is_file(),
        "{} missing (shared/ sits beside the repository)",
        dir.display()
    );
    let report = beir::evaluate(&dir, &[Mode::Bm25], None, None, &|_, _, _| {}).unwrap();
    assert_eq!(report.documents, 5183);
    assert_eq!(report.queries, 300);
    let ndcg = report.results[0].ndcg_at_10;
    assert!((0.62..0.72).contains(&ndcg), "nDCG@10 {ndcg}");
    let r100 = report.results[0].recall_at_100;
    assert!(r100 > report.results[0].recall_at_10);
}
