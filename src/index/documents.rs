//! The documents of a loaded generation, put back together from its chunks: what the knowledge base
//! holds of each file as text (after extraction), for callers that show a whole document (the MCP
//! server's resources). Nothing here touches the data folder: only documents the index knows exist,
//! and a name is looked up, never opened as a path.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::chunk::Chunk;
use super::KnowledgeBase;

impl KnowledgeBase {
    /// Every document this generation holds, by name.
    pub fn documents(&self) -> Vec<DocumentSummary> {
        summaries(&self.chunks)
    }

    /// The indexed text of the document `name` (see [`text`]).
    pub fn document_text(&self, name: &str) -> Option<String> {
        text(&self.chunks, name)
    }
}

/// One indexed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSummary {
    /// Path relative to the data folder, with `/` separators (the chunks' `source`).
    pub name: String,
    pub title: String,
    pub chunks: usize,
}

/// Every document with at least one chunk, by name.
pub fn summaries(chunks: &[Arc<Chunk>]) -> Vec<DocumentSummary> {
    let mut by_name: BTreeMap<&str, DocumentSummary> = BTreeMap::new();
    for c in chunks {
        by_name
            .entry(c.source.as_str())
            .or_insert_with(|| DocumentSummary {
                name: c.source.clone(),
                title: c.title.clone(),
                chunks: 0,
            })
            .chunks += 1;
    }
    by_name.into_values().collect()
}

/// The text of the document `name` (an exact chunk `source`), its chunks in order with the overlap
/// between neighbours written once; `None` when the index has no such document.
pub fn text(chunks: &[Arc<Chunk>], name: &str) -> Option<String> {
    let mut parts: Vec<&Chunk> = chunks
        .iter()
        .filter(|c| c.source == name)
        .map(|c| c.as_ref())
        .collect();
    if parts.is_empty() {
        return None;
    }
    parts.sort_by_key(|c| c.position);
    let mut out = String::new();
    for c in parts {
        append_without_overlap(&mut out, &c.text);
    }
    Some(out)
}

/// Neighbouring chunks share up to the chunker's overlap: the longest start of `next` that `out`
/// already ends with is not written again. Without such a start, a blank line separates them.
fn append_without_overlap(out: &mut String, next: &str) {
    if out.is_empty() {
        out.push_str(next);
        return;
    }
    // Short coincidences ("the ") are not an overlap.
    const MIN_OVERLAP_BYTES: usize = 16;
    let longest = out.len().min(next.len());
    let shared = (MIN_OVERLAP_BYTES..=longest)
        .rev()
        .filter(|&n| next.is_char_boundary(n))
        .find(|&n| out.ends_with(&next[..n]));
    match shared {
        Some(n) => out.push_str(&next[n..]),
        None => {
            out.push_str("\n\n");
            out.push_str(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(source: &str, position: usize, text: &str) -> Arc<Chunk> {
        Arc::new(Chunk {
            source: source.into(),
            title: format!("Title of {source}"),
            heading: String::new(),
            position,
            text: text.into(),
        })
    }

    #[test]
    fn overlapping_chunks_give_the_document_once_in_order() {
        let chunks = vec![
            chunk(
                "fees.md",
                1,
                "transfers cost 0.5% of the amount. International ones cost 1.5%.",
            ),
            chunk("other.md", 0, "Something else entirely."),
            chunk(
                "fees.md",
                0,
                "# Fees\nDomestic transfers cost 0.5% of the amount.",
            ),
        ];
        assert_eq!(
            text(&chunks, "fees.md").unwrap(),
            "# Fees\nDomestic transfers cost 0.5% of the amount. International ones cost 1.5%."
        );
    }

    #[test]
    fn chunks_without_overlap_are_separated_by_a_blank_line() {
        let chunks = vec![
            chunk("a.md", 0, "First part."),
            chunk("a.md", 1, "Second part."),
        ];
        assert_eq!(
            text(&chunks, "a.md").unwrap(),
            "First part.\n\nSecond part."
        );
    }

    #[test]
    fn only_names_the_index_knows_are_found() {
        let chunks = vec![chunk("docs/a.md", 0, "text")];
        assert!(text(&chunks, "docs/a.md").is_some());
        for name in [
            "a.md",
            "../docs/a.md",
            "docs/../docs/a.md",
            "/etc/passwd",
            "",
        ] {
            assert_eq!(text(&chunks, name), None, "{name}");
        }
    }

    #[test]
    fn summaries_list_each_document_once_with_its_chunk_count() {
        let chunks = vec![
            chunk("b.md", 0, "x"),
            chunk("a.md", 0, "y"),
            chunk("b.md", 1, "z"),
        ];
        let s = summaries(&chunks);
        assert_eq!(
            s.iter()
                .map(|d| (d.name.as_str(), d.chunks))
                .collect::<Vec<_>>(),
            [("a.md", 1), ("b.md", 2)]
        );
        assert_eq!(s[0].title, "Title of a.md");
    }
}
