//! The read side: a loaded generation (chunks, vectors, BM25) searched by dense and lexical retrieval
//! fused by reciprocal rank, and the term statistics the answerability gate reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::text::{content_terms, detect_language, Language};

use super::bm25::{self, Bm25Config, Bm25Index};
use super::chunk::Chunk;
use super::fusion::{self, Fusion};
use super::generations::{self, current_generation, Lease, LeaseRefused};
use super::store;
use super::vectors::VectorIndex;
use super::{storage, IndexError, IndexSettings, Manifest, CHUNKS, MANIFEST, VECTORS};

/// One retrieved chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub chunk: Arc<Chunk>,
    /// Reciprocal-rank-fusion score (higher is better).
    pub score: f32,
    /// Best cosine similarity to a query, when dense search found it.
    pub dense: Option<f32>,
    /// Best BM25 score, when lexical search found it.
    pub lexical: Option<f32>,
}

/// One chunk's scores for one query before fusion (see [`KnowledgeBase::candidate_scores`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CandidateScores {
    pub id: usize,
    pub cosine: Option<f32>,
    pub bm25: Option<f32>,
    pub lexical_weight: f32,
}

pub struct SearchResult {
    /// Fused hits, best first.
    pub hits: Vec<Hit>,
    /// Per query vector, the best cosine similarity of any chunk.
    pub best_similarity: Vec<f32>,
}

/// A loaded generation: chunks, their vectors (usearch) and a BM25 index, read-only.
pub struct KnowledgeBase {
    pub(super) chunks: Vec<Arc<Chunk>>,
    /// Each chunk's language, for ranking dense hits within their language.
    languages: Vec<Language>,
    vectors: VectorIndex,
    bm25: Bm25Index,
    terms: TermStats,
    pub manifest: Manifest,
    /// Keeps `novapay index` from deleting the generation while this is loaded.
    lease: Option<Lease>,
}

/// How many chunks contain each content term (stemmed, stop words dropped): how much a word of a
/// question says about whether the knowledge base answers it. A word in every chunk, like the company
/// name, says nothing; a word in no chunk says the question is about something else.
#[derive(Debug, Clone, Default)]
pub struct TermStats {
    pub documents: usize,
    pub document_frequency: HashMap<String, usize>,
    /// Mean number of distinct content terms per chunk.
    pub mean_terms: f32,
}

impl TermStats {
    pub fn build<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        let mut total = 0usize;
        for t in texts {
            let terms = bm25::content_terms(t.as_ref(), Bm25Config::KNOWLEDGE_BASE.languages);
            total += terms.len();
            for term in terms {
                *document_frequency.entry(term).or_default() += 1;
            }
        }
        Self {
            documents: texts.len(),
            mean_terms: if texts.is_empty() {
                0.0
            } else {
                total as f32 / texts.len() as f32
            },
            document_frequency,
        }
    }

    /// BM25's inverse document frequency; highest for a term no chunk contains.
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.documents as f32;
        let df = self.document_frequency.get(term).copied().unwrap_or(0) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Whether some chunk has this term.
    pub fn uses(&self, term: &str) -> bool {
        self.document_frequency.get(term).is_some_and(|&n| n > 0)
    }

    /// How much a term tells: its idf above that of a term every chunk has (0 for such a term; a term
    /// no chunk has weighs most).
    pub fn rarity(&self, term: &str) -> f32 {
        let n = self.documents as f32;
        let everywhere = (1.0 + 0.5 / (n + 0.5)).ln();
        (self.idf(term) - everywhere).max(0.0)
    }
}

static IN_MEMORY_BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl KnowledgeBase {
    /// Opens the current generation and leases it, refusing one built with other settings.
    pub fn open(index_dir: &Path, expected: &IndexSettings) -> Result<Self, IndexError> {
        // CURRENT may move on (and its old target be deleted) between reading it and leasing the
        // generation: then read it again.
        for _ in 0..20 {
            let name = current_generation(index_dir)
                .ok_or_else(|| IndexError::NoIndex(index_dir.to_path_buf()))?;
            let dir = index_dir.join(&name);
            match generations::lease(&dir) {
                Ok(lease) => {
                    let mut kb = Self::open_generation(index_dir, &dir, expected)?;
                    kb.lease = lease;
                    return Ok(kb);
                }
                Err(LeaseRefused::Gone)
                    if current_generation(index_dir).as_ref() != Some(&name) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(LeaseRefused::Gone) => {
                    return Err(IndexError::Storage(format!(
                        "{} (named by {}/CURRENT) is missing or incomplete; rebuild with `novapay \
                         index --rebuild`",
                        dir.display(),
                        index_dir.display()
                    )))
                }
                Err(LeaseRefused::Error(e)) => return Err(e),
            }
        }
        Err(IndexError::Storage(format!(
            "{}/CURRENT kept changing while opening the index",
            index_dir.display()
        )))
    }

    fn open_generation(
        index_dir: &Path,
        dir: &Path,
        expected: &IndexSettings,
    ) -> Result<Self, IndexError> {
        let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(storage)?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(storage)?;
        if &manifest.settings != expected {
            return Err(IndexError::Mismatch {
                dir: index_dir.to_path_buf(),
                built: manifest.settings.describe(),
                configured: expected.describe(),
            });
        }
        let stored = store::read(&dir.join(CHUNKS)).map_err(storage)?;
        let vectors = VectorIndex::restore(&dir.join(VECTORS))?;
        if vectors.size() != stored.len() {
            return Err(IndexError::Storage(format!(
                "{} holds {} vectors for {} chunks; rebuild with `novapay index --rebuild`",
                dir.display(),
                vectors.size(),
                stored.len()
            )));
        }
        let chunks = stored.into_iter().map(|s| s.chunk).collect();
        Self::assemble(chunks, vectors, manifest)
    }

    /// An in-memory knowledge base over already embedded chunks (evaluations, tests).
    pub fn from_chunks(
        chunks: Vec<Chunk>,
        vectors: &[Vec<f32>],
        settings: IndexSettings,
    ) -> Result<Self, IndexError> {
        let index = VectorIndex::from_vectors(settings.dimensions, vectors)?;
        let manifest = Manifest {
            settings,
            // Unique per build, so that answers cached for one in-memory KB never serve another.
            generation: format!(
                "in-memory-{}",
                IN_MEMORY_BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            created_unix: 0,
            files: BTreeMap::new(),
            chunks: chunks.len(),
            failed: BTreeMap::new(),
        };
        Self::assemble(chunks, index, manifest)
    }

    fn assemble(
        chunks: Vec<Chunk>,
        vectors: VectorIndex,
        manifest: Manifest,
    ) -> Result<Self, IndexError> {
        let chunks: Vec<Arc<Chunk>> = chunks.into_iter().map(Arc::new).collect();
        let texts: Vec<String> = chunks.iter().map(|c| c.search_text()).collect();
        let bm25 = Bm25Index::build(&texts, Bm25Config::KNOWLEDGE_BASE).map_err(storage)?;
        let terms = TermStats::build(&texts);
        let languages = chunks.iter().map(|c| detect_language(&c.text)).collect();
        Ok(Self {
            chunks,
            languages,
            vectors,
            bm25,
            terms,
            manifest,
            lease: None,
        })
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether this generation is leased (protected from deletion by `novapay index`).
    pub fn is_leased(&self) -> bool {
        self.lease.is_some()
    }

    pub fn term_stats(&self) -> &TermStats {
        &self.terms
    }

    /// Identifies what was indexed: a new generation (or another in-memory build) changes it.
    pub fn generation(&self) -> &str {
        &self.manifest.generation
    }

    /// Dense top-`k` for each query vector and BM25 top-`k` for each query text, fused by reciprocal
    /// rank. Several queries (the question alone, the question with recent turns) fuse the same way.
    pub fn search(
        &self,
        vectors: &[Vec<f32>],
        texts: &[&str],
        k: usize,
        fusion: Fusion,
    ) -> SearchResult {
        let mut best_similarity = Vec::with_capacity(vectors.len());
        let mut fused: HashMap<usize, Hit> = HashMap::new();
        let mut add = |id: usize, weight: f32, dense: Option<f32>, lexical: Option<f32>| {
            let Some(chunk) = self.chunks.get(id) else {
                return;
            };
            let hit = fused.entry(id).or_insert_with(|| Hit {
                chunk: chunk.clone(),
                score: 0.0,
                dense: None,
                lexical: None,
            });
            hit.score += weight;
            if let Some(d) = dense {
                hit.dense = Some(hit.dense.map_or(d, |x| x.max(d)));
            }
            if let Some(l) = lexical {
                hit.lexical = Some(hit.lexical.map_or(l, |x| x.max(l)));
            }
        };
        for v in vectors {
            let candidates = self.dense(v, k.max(fusion::DENSE_POOL));
            best_similarity.push(candidates.first().map_or(0.0, |(_, sim)| *sim));
            let ranked = if fusion.multilingual {
                fusion::rank_within_language(&candidates, |id| self.languages.get(id).copied())
            } else {
                candidates
            };
            for (rank, (id, sim)) in ranked.into_iter().take(k).enumerate() {
                add(id, fusion::reciprocal_rank(rank), Some(sim), None);
            }
        }
        for t in texts {
            let query = self.weighted_terms(t);
            for (rank, (id, score)) in self.bm25.search(t, k).into_iter().enumerate() {
                if id >= self.chunks.len() {
                    continue;
                }
                let weight = if fusion.multilingual {
                    self.lexical_weight(&query, id)
                } else {
                    1.0
                };
                add(
                    id,
                    weight * fusion::reciprocal_rank(rank),
                    None,
                    Some(score),
                );
            }
        }
        let mut hits: Vec<(usize, Hit)> = fused.into_iter().collect();
        // Equal fused scores are common (rank 1 + rank 2 either way round): the closer meaning wins,
        // then the lower id, so results never depend on hash order.
        hits.sort_by(|(ia, a), (ib, b)| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| b.dense.unwrap_or(-1.0).total_cmp(&a.dense.unwrap_or(-1.0)))
                .then_with(|| ia.cmp(ib))
        });
        let mut hits: Vec<Hit> = hits.into_iter().map(|(_, h)| h).collect();
        hits.truncate(k);
        SearchResult {
            hits,
            best_similarity,
        }
    }

    /// Share of `query`'s content terms (stemmed, stop words dropped) present in the `hits`' text.
    pub fn term_coverage(&self, query: &str, hits: &[Hit]) -> f32 {
        let texts: Vec<String> = hits.iter().map(|h| h.chunk.search_text()).collect();
        bm25::term_coverage(query, &texts, Bm25Config::KNOWLEDGE_BASE.languages)
    }

    /// The chunk with this id (as [`Self::dense`] returns them).
    pub fn chunk(&self, id: usize) -> Option<&Chunk> {
        self.chunks.get(id).map(|c| c.as_ref())
    }

    /// Every chunk's scores for one query, before fusion (for offline analysis of the ranking):
    /// its cosine, and its BM25 score with the weight fusion would give that lexical hit.
    pub fn candidate_scores(&self, vector: &[f32], text: &str) -> Vec<CandidateScores> {
        let query = self.weighted_terms(text);
        let mut scores: Vec<CandidateScores> = (0..self.chunks.len())
            .map(|id| CandidateScores {
                id,
                cosine: None,
                bm25: None,
                lexical_weight: self.lexical_weight(&query, id),
            })
            .collect();
        for (id, cosine) in self.dense(vector, self.chunks.len()) {
            if let Some(s) = scores.get_mut(id) {
                s.cosine = Some(cosine);
            }
        }
        for (id, score) in self.bm25.search(text, self.chunks.len()) {
            if let Some(s) = scores.get_mut(id) {
                s.bm25 = Some(score);
            }
        }
        scores
    }

    /// `text`'s content terms with their rarity in this knowledge base (what lexical weights read).
    fn weighted_terms(&self, text: &str) -> Vec<(String, f32)> {
        content_terms(text, Bm25Config::KNOWLEDGE_BASE.languages)
            .into_iter()
            .map(|term| {
                let w = self.terms.rarity(&term);
                (term, w)
            })
            .collect()
    }

    /// Fusion's weight of chunk `id` as a lexical hit for `query` (see [`fusion::lexical_weight`]).
    fn lexical_weight(&self, query: &[(String, f32)], id: usize) -> f32 {
        let languages = Bm25Config::KNOWLEDGE_BASE.languages;
        fusion::lexical_weight(
            query,
            &content_terms(&self.chunks[id].search_text(), languages),
        )
    }

    /// Each chunk's language (as fusion reads it).
    pub fn chunk_language(&self, id: usize) -> Option<Language> {
        self.languages.get(id).copied()
    }

    /// (chunk id, cosine similarity), best first.
    pub fn dense(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        self.vectors.search(query, k)
    }
}
