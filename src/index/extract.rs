//! Text out of knowledge-base files: Markdown and plain text (UTF-8 with or without BOM, UTF-16 with BOM,
//! or Windows-1251 as exported by 1C and Windows tools), HTML, PDF and DOCX.
//!
//! DOCX is read here with `zip` + `quick-xml` (the text runs of `word/document.xml`): the DOCX crates on
//! crates.io are for writing documents or pull in far more than text extraction needs.

use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    Markdown,
    Plain,
}

#[derive(Debug, Clone)]
pub struct ExtractedDoc {
    pub text: String,
    pub kind: DocKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported file type")]
    Unsupported,
    #[error("{0}")]
    Unreadable(String),
}

/// File extensions novapay indexes.
pub fn is_supported(path: &Path) -> bool {
    matches!(
        extension(path).as_str(),
        "md" | "markdown" | "txt" | "html" | "htm" | "pdf" | "docx"
    )
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

pub fn extract(path: &Path, bytes: &[u8]) -> Result<ExtractedDoc, ExtractError> {
    let doc = match extension(path).as_str() {
        "md" | "markdown" => ExtractedDoc {
            text: decode_text(bytes),
            kind: DocKind::Markdown,
        },
        "txt" => ExtractedDoc {
            text: decode_text(bytes),
            kind: DocKind::Plain,
        },
        "html" | "htm" => ExtractedDoc {
            text: html_to_text(bytes)?,
            kind: DocKind::Markdown,
        },
        "pdf" => ExtractedDoc {
            text: pdf_to_text(bytes)?,
            kind: DocKind::Plain,
        },
        "docx" => ExtractedDoc {
            text: docx_to_text(bytes)?,
            kind: DocKind::Plain,
        },
        _ => return Err(ExtractError::Unsupported),
    };
    if doc.text.trim().is_empty() {
        return Err(ExtractError::Unreadable("no text in the file".into()));
    }
    Ok(doc)
}

/// UTF-8 (BOM stripped), UTF-16 with a BOM, else Windows-1251: a Cyrillic file that is not valid UTF-8
/// is almost always cp1251, and cp1251 maps every byte, so nothing is lost.
pub fn decode_text(bytes: &[u8]) -> String {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        return text.into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => encoding_rs::WINDOWS_1251
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
    }
}

fn html_to_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let text = decode_text(bytes);
    html2text::from_read(text.as_bytes(), 10_000)
        .map_err(|e| ExtractError::Unreadable(format!("HTML: {e}")))
}

fn pdf_to_text(bytes: &[u8]) -> Result<String, ExtractError> {
    // pdf-extract panics on some malformed files; a bad PDF must be reported, not crash the indexer.
    // The panic hook is silenced for the call so the report is ours, not a backtrace.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    std::panic::set_hook(previous);
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(ExtractError::Unreadable(format!("PDF: {e}"))),
        Err(_) => Err(ExtractError::Unreadable("PDF: malformed file".into())),
    }
}

fn docx_to_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let bad = |e: String| ExtractError::Unreadable(format!("DOCX: {e}"));
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let mut xml = String::new();
    archive
        .by_name("word/document.xml")
        .map_err(|e| bad(e.to_string()))?
        .read_to_string(&mut xml)
        .map_err(|e| bad(e.to_string()))?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == "w:t" => in_text = true,
            quick_xml::events::Event::End(e) => match e.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => out.push('\n'),
                _ => {}
            },
            quick_xml::events::Event::Empty(e) => match e.name().as_ref() {
                "w:tab" => out.push('\t'),
                "w:br" => out.push('\n'),
                _ => {}
            },
            quick_xml::events::Event::Text(t) if in_text => {
                out.push_str(&t.xml10_content());
            }
            quick_xml::events::Event::GeneralRef(r) if in_text => {
                let entity = format!("&{};", r.into_inner());
                out.push_str(&quick_xml::escape::unescape(&entity).unwrap_or_default());
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1251_and_boms_decode_to_the_same_text() {
        let text = "Комиссия за перевод 0,5%";
        let (cp1251, _, _) = encoding_rs::WINDOWS_1251.encode(text);
        assert_eq!(decode_text(&cp1251), text);
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(text.as_bytes());
        assert_eq!(decode_text(&bom), text);
        assert_eq!(decode_text(text.as_bytes()), text);
    }

    #[test]
    fn corrupt_pdf_is_an_error_not_a_panic() {
        let err = extract(Path::new("x.pdf"), b"%PDF-1.4\n garbage garbage").unwrap_err();
        assert!(matches!(err, ExtractError::Unreadable(_)), "{err}");
    }

    #[test]
    fn docx_text_runs_and_paragraphs_are_read() {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            zip.start_file(
                "word/document.xml",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            std::io::Write::write_all(
                &mut zip,
                br#"<w:document><w:body><w:p><w:r><w:t>Fees &amp; limits</w:t></w:r></w:p><w:p><w:r><w:t xml:space="preserve">Domestic: 0.5%</w:t></w:r></w:p></w:body></w:document>"#,
            )
            .unwrap();
            zip.finish().unwrap();
        }
        let doc = extract(Path::new("a.docx"), buf.get_ref()).unwrap();
        assert_eq!(doc.text, "Fees & limits\nDomestic: 0.5%\n");
    }
}
