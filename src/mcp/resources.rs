//! The knowledge-base documents as MCP resources: `novapay://kb/<name>` for each document the serving
//! index holds, read as the text it was indexed from. A URI is decoded and looked up among the index's
//! names, never opened as a path: there is nothing to traverse.

use rmcp::model::{ReadResourceResult, Resource, ResourceContents};
use rmcp::ErrorData;

use crate::assistant::Assistant;

/// Every document resource's URI starts with this.
pub const RESOURCE_PREFIX: &str = "novapay://kb/";

/// Characters kept as they are in a URI path segment (RFC 3986 unreserved); all else is escaped.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The resource URI of the document `name` (a `/`-separated path relative to the data folder).
pub fn document_uri(name: &str) -> String {
    let segments: Vec<String> = name
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    format!("{RESOURCE_PREFIX}{}", segments.join("/"))
}

/// The document name a URI names, when it is one of ours and decodes to UTF-8.
fn document_name(uri: &str) -> Option<String> {
    let path = uri.strip_prefix(RESOURCE_PREFIX)?;
    let name = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty()).then_some(name)
}

pub fn list(assistant: &Assistant) -> Vec<Resource> {
    assistant
        .documents()
        .into_iter()
        .map(|d| {
            Resource::new(document_uri(&d.name), d.name.clone())
                .with_title(d.title)
                .with_description(format!(
                    "Knowledge-base document {} ({} indexed chunks), as indexed text",
                    d.name, d.chunks
                ))
                .with_mime_type("text/plain")
        })
        .collect()
}

pub fn read(assistant: &Assistant, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let text = document_name(uri).and_then(|name| assistant.document_text(&name));
    match text {
        Some(text) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
            text, uri,
        )])),
        None => Err(ErrorData::resource_not_found(
            format!(
                "no such document: {}; resources/list names the knowledge base's documents",
                crate::logsafe::truncate_chars(uri, 200)
            ),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_uri() {
        for name in [
            "fees-and-limits.md",
            "guides/cards v2.md",
            "ru/тарифы.md",
            "a%20b.md",
            "odd?#name.md",
        ] {
            let uri = document_uri(name);
            assert!(uri.starts_with(RESOURCE_PREFIX), "{uri}");
            assert!(
                !uri[RESOURCE_PREFIX.len()..].contains([' ', '?', '#']),
                "{uri}"
            );
            assert_eq!(document_name(&uri).as_deref(), Some(name), "{uri}");
        }
    }

    #[test]
    fn other_uris_name_no_document() {
        for uri in [
            "file:///etc/passwd",
            "novapay://kb/",
            "novapay://other/fees.md",
            "novapay://kb/%FF%FE",
        ] {
            assert_eq!(document_name(uri), None, "{uri}");
        }
    }
}
