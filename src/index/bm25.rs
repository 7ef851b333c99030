//! Lexical retrieval: BM25 over an in-memory tantivy index with stemming. Each language gets its own
//! field (English and Russian stemmers), and a query searches them all, so a Russian word is matched by
//! its stem without the English stemmer mangling it, and the other way round.

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, INDEXED, STORED,
};
use tantivy::tokenizer::Language;

use crate::text::words::analyzer;
pub use crate::text::words::content_terms;
use tantivy::{doc, Index, IndexReader, TantivyDocument, Term};

pub struct Bm25Index {
    reader: IndexReader,
    fields: Vec<Field>,
    languages: &'static [Language],
    stop_words: bool,
    id: Field,
}

#[derive(Debug, Clone, Copy)]
pub struct Bm25Config {
    pub languages: &'static [Language],
    /// Drop each language's stop words (as Lucene's English analyzer does).
    pub stop_words: bool,
}

impl Bm25Config {
    /// The knowledge base: customers write English and Russian.
    pub const KNOWLEDGE_BASE: Bm25Config = Bm25Config {
        languages: &[Language::English, Language::Russian],
        stop_words: false,
    };
    /// English-only corpora such as BEIR, like Lucene's English analyzer.
    pub const ENGLISH: Bm25Config = Bm25Config {
        languages: &[Language::English],
        stop_words: true,
    };
}

/// Share of the query's content terms found in `texts`; 0 when the query has no content term.
pub fn term_coverage<S: AsRef<str>>(query: &str, texts: &[S], languages: &[Language]) -> f32 {
    let query_terms = content_terms(query, languages);
    if query_terms.is_empty() {
        return 0.0;
    }
    let joined: String = texts
        .iter()
        .map(|t| t.as_ref())
        .collect::<Vec<_>>()
        .join("\n");
    let text_terms = content_terms(&joined, languages);
    query_terms.intersection(&text_terms).count() as f32 / query_terms.len() as f32
}

impl Bm25Index {
    /// Indexes `texts`; a hit's id is the text's position in the slice.
    pub fn build<S: AsRef<str>>(texts: &[S], config: Bm25Config) -> tantivy::Result<Self> {
        let mut schema = Schema::builder();
        let id = schema.add_u64_field("id", INDEXED | STORED);
        let mut fields = Vec::new();
        for lang in config.languages {
            let name = format!("text_{lang:?}").to_lowercase();
            let options = TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(&name)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            );
            fields.push(schema.add_text_field(&name, options));
        }
        let index = Index::create_in_ram(schema.build());
        for lang in config.languages {
            let name = format!("text_{lang:?}").to_lowercase();
            index
                .tokenizers()
                .register(&name, analyzer(*lang, config.stop_words));
        }
        let mut writer = index.writer_with_num_threads(1, 64 * 1024 * 1024)?;
        for (i, text) in texts.iter().enumerate() {
            let mut d = doc!(id => i as u64);
            for f in &fields {
                d.add_text(*f, text.as_ref());
            }
            writer.add_document(d)?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Self {
            reader,
            fields,
            languages: config.languages,
            stop_words: config.stop_words,
            id,
        })
    }

    /// Best `k` texts for `query` as (id, BM25 score), best first. The query is run through each
    /// field's own analyzer and its terms OR-ed: customer text is never parsed as query syntax.
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, lang) in self.fields.iter().zip(self.languages) {
            let mut analyzer = analyzer(*lang, self.stop_words);
            let mut stream = analyzer.token_stream(query);
            while stream.advance() {
                let term = Term::from_field_text(*field, &stream.token().text);
                clauses.push((
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                ));
            }
        }
        if clauses.is_empty() {
            return Vec::new();
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let Ok(top) = searcher.search(&query, &TopDocs::with_limit(k.max(1)).order_by_score())
        else {
            return Vec::new();
        };
        top.into_iter()
            .filter_map(|(score, addr)| {
                let doc: TantivyDocument = searcher.doc(addr).ok()?;
                let id = doc.get_first(self.id)?.as_u64()?;
                Some((id as usize, score))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_and_english_words_match_by_stem() {
        let texts = [
            "Комиссия за международные переводы составляет 1,5%",
            "Domestic transfers are charged 0.5%",
            "Cards can be blocked in the app",
        ];
        let idx = Bm25Index::build(&texts, Bm25Config::KNOWLEDGE_BASE).unwrap();
        assert_eq!(idx.search("международный перевод", 3)[0].0, 0);
        assert_eq!(idx.search("transfer charges", 3)[0].0, 1);
        assert_eq!(idx.search("blocking a card", 3)[0].0, 2);
        // Stop words do not count as overlap; stems do.
        assert_eq!(
            term_coverage("How do I bake a cake?", &texts, &[Language::English]),
            0.0
        );
        assert!(term_coverage("charges for a transfer", &texts, &[Language::English]) > 0.9);
        // Query syntax in customer text is not an error.
        assert!(!idx.search("fee: \"(0.5%) AND", 3).is_empty());
    }
}
