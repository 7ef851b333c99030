//! Knowledge-base management for a running server: each change to the data folder builds and
//! publishes a new generation ([`crate::index::Library`]) and the assistant switches to it. Answers
//! already past retrieval finish with the generation they started on.

use std::sync::Arc;

pub use crate::index::{DocumentError, DocumentInfo, DocumentStatus, LibraryChange};
use crate::index::{KnowledgeBase, Library};

use super::Assistant;

pub struct Documents {
    library: Arc<Library>,
    assistant: Arc<Assistant>,
}

impl Documents {
    pub fn new(library: Arc<Library>, assistant: Arc<Assistant>) -> Self {
        Self { library, assistant }
    }

    pub fn library(&self) -> &Arc<Library> {
        &self.library
    }

    /// Largest document accepted, in bytes.
    pub fn max_document_bytes(&self) -> usize {
        self.library.max_document_bytes()
    }

    /// The documents of the data folder and their state in the serving generation. Blocking.
    pub fn list(&self) -> Vec<DocumentInfo> {
        self.library.documents(&self.assistant.knowledge_base())
    }

    /// Checks an upload without writing anything (name, type, size, readable text).
    pub fn check(&self, name: &str, bytes: &[u8]) -> Result<String, DocumentError> {
        self.library.check_upload(name, bytes)
    }

    /// Adds or replaces a document; new questions are answered with it when this returns. Blocking.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<LibraryChange, DocumentError> {
        self.library
            .put(name, bytes, |kb| self.switch(kb, "upload"))
    }

    /// Deletes a document; new questions no longer see it when this returns. Blocking.
    pub fn delete(&self, name: &str) -> Result<LibraryChange, DocumentError> {
        self.library.delete(name, |kb| self.switch(kb, "delete"))
    }

    /// Re-indexes the data folder as it is (changed files only). Blocking.
    pub fn reindex(&self, why: &'static str) -> Result<LibraryChange, DocumentError> {
        self.library.reindex(|kb| self.switch(kb, why))
    }

    fn switch(&self, kb: KnowledgeBase, why: &str) {
        let (generation, chunks) = (kb.manifest.generation.clone(), kb.len());
        let old = self.assistant.replace_knowledge_base(Arc::new(kb));
        tracing::info!(%generation, chunks, previous = %old.manifest.generation, why, "switched to a new index generation");
    }
}
