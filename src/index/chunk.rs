//! Splitting documents into chunks that fit the embedder: text-splitter's Markdown-aware splitter sized
//! by the embedder's own tokenizer. Each chunk keeps its source, the heading path it sits under and its
//! position in the document.

use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

use super::extract::DocKind;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Path of the source file relative to the data folder, with `/` separators.
    pub source: String,
    /// Title of the document (its first heading, or the file name).
    pub title: String,
    /// Headings above the chunk, outermost first, joined by " > ".
    pub heading: String,
    /// Index of the chunk within its document.
    pub position: usize,
    pub text: String,
}

impl Chunk {
    /// What gets embedded and indexed: the heading path gives a chunk the context its text may lack
    /// ("0.5%" means nothing without "Fees > Domestic transfers").
    pub fn search_text(&self) -> String {
        if self.heading.is_empty() {
            format!("{}\n{}", self.title, self.text)
        } else {
            format!("{}\n{}", self.heading, self.text)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkSettings {
    /// Largest chunk, in embedder tokens.
    pub max_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub overlap_tokens: usize,
}

impl ChunkSettings {
    /// Tokens a chunk leaves for the heading line and the passage prefix within the embedder's window.
    const HEADROOM: usize = 48;

    /// `max_tokens` (default 200) shrunk to fit the embedder's window with room for the heading line
    /// and the passage prefix; the overlap at most half a chunk.
    pub fn fitted(max_tokens: Option<usize>, overlap: usize, embedder_max_length: usize) -> Self {
        let fit = embedder_max_length.saturating_sub(Self::HEADROOM).max(32);
        let max_tokens = max_tokens.unwrap_or(200).min(fit);
        Self {
            max_tokens,
            overlap_tokens: overlap.min(max_tokens / 2),
        }
    }
}

pub struct Chunker {
    markdown: MarkdownSplitter<Tokenizer>,
    plain: TextSplitter<Tokenizer>,
}

impl Chunker {
    /// `tokenizer` is the embedder's; its padding and truncation settings are removed for counting.
    pub fn new(tokenizer: &Tokenizer, settings: ChunkSettings) -> Result<Self, String> {
        let mut counter = tokenizer.clone();
        counter.with_padding(None);
        counter.with_truncation(None).map_err(|e| e.to_string())?;
        let config = || -> Result<ChunkConfig<Tokenizer>, String> {
            ChunkConfig::new(settings.max_tokens)
                .with_sizer(counter.clone())
                .with_overlap(settings.overlap_tokens)
                .map_err(|e| e.to_string())
        };
        Ok(Self {
            markdown: MarkdownSplitter::new(config()?),
            plain: TextSplitter::new(config()?),
        })
    }

    pub fn chunk(&self, source: &str, text: &str, kind: DocKind) -> Vec<Chunk> {
        let headings = if kind == DocKind::Markdown {
            markdown_headings(text)
        } else {
            Vec::new()
        };
        let title = headings
            .iter()
            .find(|h| h.level == 1)
            .or(headings.first())
            .map(|h| h.title.clone())
            .unwrap_or_else(|| file_stem(source));
        // (where the heading path is read, where the piece starts, the piece)
        let pieces: Vec<(usize, usize, &str)> = match kind {
            // One section at a time: a chunk never runs from one section into the next under the
            // first one's heading, and a heading always stays with the text under it.
            DocKind::Markdown => sections(text, &headings)
                .into_iter()
                .flat_map(|section| {
                    self.markdown
                        .chunk_indices(&text[section.start..section.end])
                        .map(move |(offset, piece)| {
                            let at = (section.start + offset).max(section.body);
                            (at, section.start + offset, piece)
                        })
                })
                .collect(),
            DocKind::Plain => self
                .plain
                .chunk_indices(text)
                .map(|(offset, piece)| (offset, offset, piece))
                .collect(),
        };
        pieces
            .into_iter()
            .filter(|(_, _, t)| !t.trim().is_empty())
            .enumerate()
            .map(|(position, (offset, _, piece))| Chunk {
                source: source.to_string(),
                title: title.clone(),
                heading: heading_path_at(&headings, offset),
                position,
                text: piece.trim().to_string(),
            })
            .collect()
    }
}

struct Heading {
    offset: usize,
    level: usize,
    title: String,
}

fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut in_code = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            let level = trimmed.chars().take_while(|c| *c == '#').count();
            let rest = &trimmed[level..];
            if (1..=6).contains(&level) && rest.starts_with([' ', '\t']) {
                out.push(Heading {
                    offset,
                    level,
                    title: rest.trim().trim_end_matches('#').trim().to_string(),
                });
            }
        }
        offset += line.len();
    }
    out
}

/// A section of a Markdown document: its heading lines (a heading with no text of its own stays with
/// the heading under it) and its text, up to the next heading.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Section {
    start: usize,
    /// Where the section's text starts (after its heading lines): its heading path is read here.
    body: usize,
    end: usize,
}

fn sections(text: &str, headings: &[Heading]) -> Vec<Section> {
    let mut out = Vec::new();
    let first = headings.first().map_or(text.len(), |h| h.offset);
    if !text[..first].trim().is_empty() {
        out.push(Section {
            start: 0,
            body: 0,
            end: first,
        });
    }
    let mut pending: Option<usize> = None;
    for (i, h) in headings.iter().enumerate() {
        let body = text[h.offset..]
            .find('\n')
            .map_or(text.len(), |n| h.offset + n + 1);
        let end = headings.get(i + 1).map_or(text.len(), |next| next.offset);
        let start = *pending.get_or_insert(h.offset);
        if text[body.min(end)..end].trim().is_empty() && i + 1 < headings.len() {
            continue;
        }
        out.push(Section { start, body, end });
        pending = None;
    }
    out
}

/// The chain of headings in force at `offset` (a heading that starts the chunk counts).
fn heading_path_at(headings: &[Heading], offset: usize) -> String {
    let mut stack: Vec<&Heading> = Vec::new();
    for h in headings.iter().take_while(|h| h.offset <= offset) {
        while stack.last().is_some_and(|top| top.level >= h.level) {
            stack.pop();
        }
        stack.push(h);
    }
    stack
        .iter()
        .map(|h| h.title.as_str())
        .collect::<Vec<_>>()
        .join(" > ")
}

fn file_stem(source: &str) -> String {
    std::path::Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().replace(['-', '_'], " "))
        .unwrap_or_else(|| source.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn fitted_chunks_leave_room_for_heading_and_prefix() {
        // MiniLM's 256-token window, e5's 512: the default 200 fits the latter only.
        let minilm = ChunkSettings::fitted(None, 30, 256);
        assert_eq!((minilm.max_tokens, minilm.overlap_tokens), (200, 30));
        let small = ChunkSettings::fitted(None, 30, 128);
        assert_eq!(small.max_tokens, 80);
        let tiny = ChunkSettings::fitted(Some(500), 400, 40);
        assert_eq!((tiny.max_tokens, tiny.overlap_tokens), (32, 16));
    }
    use super::*;

    #[test]
    fn sections_are_cut_at_every_heading_and_a_heading_stays_with_its_text() {
        let text = "Preface line\n# Fees\nintro\n## Domestic\n0.5%\n## Empty\n### Business\nvaries\n## Last";
        let hs = markdown_headings(text);
        let cut = sections(text, &hs);
        let pieces: Vec<&str> = cut.iter().map(|s| &text[s.start..s.end]).collect();
        // "## Empty" has no text of its own: it stays with "### Business"; the pieces cover the text.
        assert_eq!(
            pieces,
            [
                "Preface line\n",
                "# Fees\nintro\n",
                "## Domestic\n0.5%\n",
                "## Empty\n### Business\nvaries\n",
                "## Last"
            ]
        );
        assert_eq!(pieces.concat(), text);
        let paths: Vec<String> = cut.iter().map(|s| heading_path_at(&hs, s.body)).collect();
        assert_eq!(paths[3], "Fees > Empty > Business");
        assert_eq!(paths[1], "Fees");
        assert_eq!(paths[0], "");
    }

    #[test]
    fn heading_path_follows_nesting() {
        let text =
            "# Fees\nintro\n## Domestic\n0.5%\n## International\n1.5%\n### Business\nvaries\n";
        let hs = markdown_headings(text);
        assert_eq!(hs.len(), 4);
        let at = |needle: &str| heading_path_at(&hs, text.find(needle).unwrap());
        assert_eq!(at("intro"), "Fees");
        assert_eq!(at("0.5%"), "Fees > Domestic");
        assert_eq!(at("1.5%"), "Fees > International");
        assert_eq!(at("varies"), "Fees > International > Business");
    }
}
