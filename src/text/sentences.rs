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

/// The sentences of a chunk, as shown to a customer: list markers and Markdown emphasis go, headings
/// and table rules are skipped, a line wrapped inside a sentence is read on with the next, and a
/// table row reads with its columns' names ("ATM withdrawal — Classic: no; Extra: yes"; a two-column
/// row as "cell: cell").
pub fn sentences_of(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut blocks: Vec<String> = Vec::new();
    // The column names of the table being read, when its header row is in this text.
    let mut columns: Option<Vec<String>> = None;
    // Whether the last block is prose that the next line may continue.
    let mut open = false;
    for (n, &line) in lines.iter().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            open = false;
            columns = None;
            continue;
        }
        // FAQ question lines ask, they do not answer; "A:" only labels the answer.
        if line.starts_with("Q:") || line.starts_with("В:") {
            open = false;
            continue;
        }
        if line.starts_with('|') {
            open = false;
            if is_table_rule(line) {
                continue;
            }
            let cells = table_cells(line);
            // A header row is the one above a rule.
            if lines.get(n + 1).is_some_and(|next| is_table_rule(next)) {
                columns = Some(cells);
                continue;
            }
            blocks.push(table_row(&cells, columns.as_deref()));
            continue;
        }
        columns = None;
        let line = line
            .strip_prefix("A:")
            .or_else(|| line.strip_prefix("О:"))
            .map_or(line, str::trim_start);
        let item = strip_list_marker(line);
        let is_item = item.len() != line.len();
        match blocks.last_mut() {
            Some(last) if open && !is_item && continues(last, item) => {
                last.push(' ');
                last.push_str(item);
            }
            _ => blocks.push(item.to_string()),
        }
        open = true;
    }
    let mut out = Vec::new();
    for block in blocks {
        let plain = block.replace("**", "").replace('`', "");
        for s in split_sentences(&plain) {
            let s = s.trim();
            if s.split_whitespace().count() >= 3 && !s.ends_with('?') {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// Whether `line` reads on from `before` (a sentence wrapped onto the next line): `before` ends
/// without a sentence's end, and `line` starts in lower case or `before` ends with a comma or a dash.
fn continues(before: &str, line: &str) -> bool {
    let before = before.trim_end_matches(['*', '_', ' ']);
    let Some(last) = before.chars().last() else {
        return false;
    };
    if matches!(last, '.' | '!' | '?' | '…' | ':' | ';') {
        return false;
    }
    let first = line
        .trim_start_matches(['*', '_', '«', '"', '('])
        .chars()
        .next();
    first.is_some_and(char::is_lowercase) || matches!(last, ',' | '—' | '–' | '-' | '(')
}

fn is_table_rule(line: &str) -> bool {
    line.starts_with('|') && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

fn table_cells(line: &str) -> Vec<String> {
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// A table row as a sentence: with three columns or more and the header known, "first — name:
/// cell; name: cell"; else the non-empty cells joined by ": ".
fn table_row(cells: &[String], columns: Option<&[String]>) -> String {
    match columns {
        Some(names) if cells.len() >= 3 && names.len() == cells.len() => {
            let rest: Vec<String> = cells[1..]
                .iter()
                .zip(&names[1..])
                .filter(|(cell, _)| !cell.is_empty())
                .map(|(cell, name)| {
                    if name.is_empty() {
                        cell.clone()
                    } else {
                        format!("{name}: {cell}")
                    }
                })
                .collect();
            if cells[0].is_empty() {
                rest.join("; ")
            } else {
                format!("{} — {}", cells[0], rest.join("; "))
            }
        }
        _ => cells
            .iter()
            .filter(|c| !c.is_empty())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(": "),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_wrapped_onto_the_next_line_reads_as_one() {
        let text = "Выберите одну категорию до 5-го числа. На тарифе «Плюс» можно\nвыбрать две категории \
                    (например, аптеки,\nАЗС, кино).\nPhone: +996 312 000 000\nEmail us at help@example.com";
        assert_eq!(
            sentences_of(text),
            vec![
                "Выберите одну категорию до 5-го числа.",
                "На тарифе «Плюс» можно выбрать две категории (например, аптеки, АЗС, кино).",
                "Phone: +996 312 000 000",
                "Email us at help@example.com",
            ]
        );
    }

    #[test]
    fn a_table_row_reads_with_its_column_names() {
        let text = "| | Classic | Extra |\n|---|---|---|\n| ATM withdrawal abroad | 2% | free |\n\
                    | Virtual cards | 1 | |";
        assert_eq!(
            sentences_of(text),
            vec![
                "ATM withdrawal abroad — Classic: 2%; Extra: free",
                "Virtual cards — Classic: 1",
            ]
        );
    }

    #[test]
    fn rows_of_a_table_cut_from_its_header_are_all_kept() {
        // A chunk that starts inside a table: no rule under its first row, so no row is a header.
        let text = "| Card delivery | 300 KGS | free |\n| Card reissue | 200 KGS | 100 KGS |";
        assert_eq!(
            sentences_of(text),
            vec![
                "Card delivery: 300 KGS: free",
                "Card reissue: 200 KGS: 100 KGS"
            ]
        );
    }
}
