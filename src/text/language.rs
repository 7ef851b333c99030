//! The language of a text: Russian or English, by its letters.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Ru,
}

/// Russian when Cyrillic letters outnumber Latin ones.
pub fn detect_language(text: &str) -> Language {
    let cyr = text
        .chars()
        .filter(|c| ('\u{400}'..='\u{4FF}').contains(c))
        .count();
    let lat = text.chars().filter(|c| c.is_ascii_alphabetic()).count();
    if cyr > lat {
        Language::Ru
    } else {
        Language::En
    }
}
