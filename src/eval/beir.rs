//! BEIR evaluation: dense (the embedder, exact cosine), BM25 (tantivy, English analyzer) and hybrid
//! (reciprocal rank fusion of the two), each document as `title + " " + text` and each query raw, as the
//! published sentence-transformers / BEIR numbers were computed.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::metrics::{ndcg_at, recall_at, rrf};
use super::{read_jsonl, EvalError};
use crate::embed::Embedder;
use crate::index::bm25::{Bm25Config, Bm25Index};

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Query {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dense,
    Bm25,
    Hybrid,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dense" => Ok(Self::Dense),
            "bm25" => Ok(Self::Bm25),
            "hybrid" => Ok(Self::Hybrid),
            other => Err(format!("unknown mode `{other}` (dense, bm25 or hybrid)")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeScores {
    pub mode: Mode,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BeirReport {
    pub dataset: String,
    pub documents: usize,
    pub queries: usize,
    pub embedder: Option<String>,
    pub results: Vec<ModeScores>,
    pub embed_seconds: f64,
}

const DEPTH: usize = 1000;

/// Progress callback: (what, done, total).
pub type Progress<'a> = &'a dyn Fn(&str, usize, usize);

pub fn evaluate(
    dir: &Path,
    modes: &[Mode],
    embedder: Option<&Embedder>,
    limit: Option<usize>,
    progress: Progress,
) -> Result<BeirReport, EvalError> {
    let docs: Vec<Doc> = read_jsonl(&dir.join("corpus.jsonl"))?;
    let qrels = read_qrels(&dir.join("qrels-test.tsv"))?;
    let queries_path = if dir.join("queries-test.jsonl").is_file() {
        dir.join("queries-test.jsonl")
    } else {
        dir.join("queries.jsonl")
    };
    let mut queries: Vec<Query> = read_jsonl(&queries_path)?;
    queries.retain(|q| qrels.contains_key(&q.id));
    if let Some(n) = limit {
        queries.truncate(n);
    }
    let texts: Vec<String> = docs
        .iter()
        .map(|d| format!("{} {}", d.title, d.text).trim().to_string())
        .collect();

    let mut dense_runs: Vec<Vec<usize>> = Vec::new();
    let mut embed_seconds = 0.0;
    if modes.iter().any(|m| *m != Mode::Bm25) {
        let embedder =
            embedder.ok_or_else(|| EvalError::Failed("dense modes need an embedder".into()))?;
        let started = std::time::Instant::now();
        let doc_vecs =
            super::embed_passages_with_progress(embedder, &texts, "documents", progress)?;
        let qtexts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        let q_vecs = embedder
            .embed_queries(&qtexts)
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        embed_seconds = started.elapsed().as_secs_f64();
        dense_runs = q_vecs
            .iter()
            .map(|q| exact_top(q, &doc_vecs, DEPTH))
            .collect();
    }
    let bm25_runs: Vec<Vec<usize>> = if modes.iter().any(|m| *m != Mode::Dense) {
        let index = Bm25Index::build(&texts, Bm25Config::ENGLISH)
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        queries
            .iter()
            .map(|q| {
                index
                    .search(&q.text, DEPTH)
                    .into_iter()
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };

    let ids = |run: &[usize]| -> Vec<&str> { run.iter().map(|i| docs[*i].id.as_str()).collect() };
    let mut results = Vec::new();
    for mode in modes {
        let (mut ndcg, mut r10, mut r100) = (0.0, 0.0, 0.0);
        for (qi, q) in queries.iter().enumerate() {
            let ranked: Vec<&str> = match mode {
                Mode::Dense => ids(&dense_runs[qi]),
                Mode::Bm25 => ids(&bm25_runs[qi]),
                Mode::Hybrid => rrf(&[ids(&dense_runs[qi]), ids(&bm25_runs[qi])]),
            };
            let rel = &qrels[&q.id];
            ndcg += ndcg_at(&ranked, rel, 10);
            r10 += recall_at(&ranked, rel, 10);
            r100 += recall_at(&ranked, rel, 100);
        }
        let n = queries.len().max(1) as f64;
        results.push(ModeScores {
            mode: *mode,
            ndcg_at_10: ndcg / n,
            recall_at_10: r10 / n,
            recall_at_100: r100 / n,
        });
    }
    Ok(BeirReport {
        dataset: dir.display().to_string(),
        documents: docs.len(),
        queries: queries.len(),
        embedder: embedder.map(|e| e.name.clone()),
        results,
        embed_seconds,
    })
}

/// Exact cosine top-k (vectors are unit length, so the dot product is the cosine).
fn exact_top(query: &[f32], docs: &[Vec<f32>], k: usize) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d.iter().zip(query).map(|(a, b)| a * b).sum()))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().map(|(i, _)| i).collect()
}

fn read_qrels(path: &Path) -> Result<HashMap<String, HashMap<String, u32>>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Data {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut qrels: HashMap<String, HashMap<String, u32>> = HashMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 {
            continue;
        }
        let grade: u32 = cols[2].trim().parse().unwrap_or(0);
        qrels
            .entry(cols[0].to_string())
            .or_default()
            .insert(cols[1].to_string(), grade);
    }
    Ok(qrels)
}
