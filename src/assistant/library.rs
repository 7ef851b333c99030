//! The documents the knowledge base holds, for doors that show them rather than answer from them (the
//! MCP server's resources): their names and their indexed text, from the serving generation.

use super::Assistant;
pub use crate::index::documents::DocumentSummary;

impl Assistant {
    /// The documents new questions are answered from, by name.
    pub fn documents(&self) -> Vec<DocumentSummary> {
        self.kb.load().documents()
    }

    /// The indexed text of the document `name` (exactly as [`Self::documents`] names it); `None` for
    /// any other name. Nothing is read from the data folder.
    pub fn document_text(&self, name: &str) -> Option<String> {
        self.kb.load().document_text(name)
    }
}
