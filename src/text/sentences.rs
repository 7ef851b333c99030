//! Sentences: where a text is cut into sentences (the figure check, extractive answers, the
//! answerability signals all cut the same way), and the sentences of a chunk as a customer reads them.

/// Splits after ".", "!", "?", "…" or ":" followed by whitespace, and at line breaks; the pieces keep
/// their trailing whitespace so that joining them gives the text back. A dot between digits
/// ("1.5%") or in an abbreviation followed by a lower-case word ("e.g. the") does not end a
/// sentence.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let end_here = if c == '\n' {
            true
        } else if c == '.' && is_list_number(&text[start..at]) {
            // "1. Open the app": the dot of a list number does not end a sentence.
            false
        } else if matches!(c, '.' | '!' | '?' | '…') {
            // Closing brackets and quotes stay with the sentence: "cost 1.5% [1]." or "(…)."
            let next = chars.get(i + 1).map(|(_, c)| *c);
            match next {
                Some(n) if n.is_whitespace() => {
                    let following = chars[i + 1..]
                        .iter()
                        .map(|(_, c)| *c)
                        .find(|c| !c.is_whitespace());
                    following.is_none_or(|f| !f.is_lowercase())
                }
                None => true,
                _ => false,
            }
        } else {
            false
        };
        if end_here {
            // Take the whitespace that follows.
            let mut j = i + 1;
            while j < chars.len() && chars[j].1.is_whitespace() {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |(b, _)| *b);
            out.push(&text[start..end]);
            start = end;
            i = j;
            let _ = at;
            continue;
        }
        i += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn is_list_number(before: &str) -> bool {
    let t = before.trim();
    (1..=2).contains(&t.len()) && t.chars().all(|c| c.is_ascii_digit())
}

/// The sentences of a chunk, as shown to a customer: table rows become "cell: cell", list markers
/// and Markdown emphasis go, headings and table rules are skipped.
pub fn sentences_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut header_row = true;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            header_row = true;
            continue;
        }
        // FAQ question lines ask, they do not answer; "A:" only labels the answer.
        if line.starts_with("Q:") || line.starts_with("В:") {
            continue;
        }
        let line = line
            .strip_prefix("A:")
            .or_else(|| line.strip_prefix("О:"))
            .map_or(line, str::trim_start);
        let plain = if line.starts_with('|') {
            if line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ')) {
                continue;
            }
            let cells: Vec<&str> = line
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            // The first row of a table names its columns.
            let is_header = std::mem::replace(&mut header_row, false);
            if is_header {
                continue;
            }
            cells.join(": ")
        } else {
            header_row = true;
            strip_list_marker(line).to_string()
        };
        let plain = plain.replace("**", "").replace('`', "");
        for s in split_sentences(&plain) {
            let s = s.trim();
            if s.split_whitespace().count() >= 3 && !s.ends_with('?') {
                out.push(s.to_string());
            }
        }
    }
    out
}

fn strip_list_marker(line: &str) -> &str {
    let l = line.trim_start_matches(['-', '*', '•']).trim_start();
    if l.len() != line.len() {
        return l;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && line[digits..].starts_with(['.', ')']) {
        return line[digits + 1..].trim_start();
    }
    line
}
