//! What may reach a log line from a customer or a caller: card-number-like digit runs masked, control
//! characters escaped (a `\n` in a question must not forge a log line, an escape sequence must not
//! reach the operator's terminal), long values cut, secrets reduced to a short hash. Every field that
//! carries text from outside goes through [`user_text`] (or [`json_value`]) before it is logged.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Longest logged user string, in characters.
const MAX_LOGGED_CHARS: usize = 1000;

/// Replaces runs of 13 or more digits with `[card number]`. Digits may be separated by up to three
/// spaces, dashes, dots, slashes or underscores, and the run may be glued to letters
/// (`card4111111111111111`): customers type card numbers every way. Luhn is not checked, so that a
/// mistyped number is masked too; an amount (`$1,000`) or a phone number (11-12 digits) is left alone.
/// Digits of every script count, full-width ones included.
pub fn mask_card_numbers(text: &str) -> String {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        // Any decimal digit: the full-width "４１１１" some phone keyboards type, Arabic-Indic and
        // other scripts' digits are the same card number; and their spaces, dashes, dots and slashes.
        regex::Regex::new(
            r"\p{Nd}(?:[ \t\-./_\u{a0}\u{2007}\u{202f}\u{3000}\u{2010}-\u{2015}\u{2212}\u{ff0d}\u{ff0e}\u{ff0f}\u{ff3f}]{0,3}\p{Nd}){12,}",
        )
            .expect("valid card-number regex")
    });
    re.replace_all(text, "[card number]").into_owned()
}

/// Writes control characters (C0, DEL, C1), line and paragraph separators and bidirectional
/// overrides as `\n`, `\u{1b}`, ... so that a logged value stays on its line and prints as typed.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A customer's or caller's string, ready for a log field: masked, escaped, cut.
pub fn user_text(text: &str) -> String {
    escape_controls(&mask_card_numbers(&truncate_chars(text, MAX_LOGGED_CHARS)))
}

/// A caller's JSON value (e.g. `metadata`) as one masked, escaped log field.
pub fn json_value(value: &serde_json::Value) -> String {
    user_text(&value.to_string())
}

/// A secret (a rejected token, a key) as `sha256:` and 8 hex digits: enough to tell two apart in a
/// log, useless to anyone who reads it.
pub fn secret_hint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luhn_ok(digits: &str) -> bool {
        let ds: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
        let sum: u32 = ds
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                if i % 2 == 1 {
                    let d2 = d * 2;
                    if d2 > 9 {
                        d2 - 9
                    } else {
                        d2
                    }
                } else {
                    d
                }
            })
            .sum();
        sum.is_multiple_of(10)
    }

    #[test]
    fn card_numbers_are_masked_however_they_are_typed() {
        // (input, Luhn-valid): every spelling must lose its digits.
        let cases: &[(&str, bool)] = &[
            ("4111111111111111", true),
            ("4111 1111 1111 1111", true),
            ("4111-1111-1111-1111", true),
            ("4111.1111.1111.1111", true),
            ("4111/1111/1111/1111", true),
            ("4111_1111_1111_1111", true),
            ("4111  1111  1111  1111", true),
            ("4111 - 1111 - 1111 - 1111", true),
            ("4111\t1111\t1111\t1111", true),
            ("4111\u{a0}1111\u{a0}1111\u{a0}1111", true),
            ("card4111111111111111", true),
            ("4111111111111111end", true),
            ("карта4111111111111111", true),
            ("x4111-1111-1111-1111y", true),
            ("5500 0000 0000 0004", true),
            ("5500000000000004", true),
            ("3400 000000 00009", true),
            ("340000000000009", true),
            ("6011 0000 0000 0004", true),
            ("2200 1234 5678 9010", false),
            ("4111 1111 1111 1112", false),
            ("4111111111111112", false),
            ("1234567890123", false),
            ("1234 5678 9012 3456 789", false),
            ("1234.5678.9012.3456", false),
            ("1234/5678/9012/3456", false),
            ("1234_5678_9012_3456", false),
            ("1234  5678  9012  3456", false),
            ("PAN:1234567890123456;", false),
            ("номер1234-5678-9012-3456,срок", false),
            ("4000 0566 5566 5556", true),
            ("3530111333300000", true),
        ];
        assert!(cases.len() >= 30);
        assert!(cases.iter().filter(|(_, l)| *l).count() >= 10);
        for (input, luhn) in cases {
            let digits: String = input.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(luhn_ok(&digits), *luhn, "table error: {input}");
            let masked = mask_card_numbers(&format!("my card {input} was charged"));
            assert!(masked.contains("[card number]"), "{input:?} -> {masked}");
            let left: String = masked.chars().filter(char::is_ascii_digit).collect();
            assert!(left.len() < 4, "{input:?} -> {masked}");
        }
    }

    #[test]
    fn card_numbers_in_full_width_and_other_scripts_digits_are_masked() {
        for input in [
            "４１１１ １１１１ １１１１ １１１１",
            "４１１１－１１１１－１１１１－１１１１",
            "４１１１\u{3000}１１１１\u{3000}１１１１\u{3000}１１１１",
            "4111 １１１１ 1111 1111",
            "٤١١١١١١١١١١١١١١١",
            "४१११ ११११ ११११ ११११",
            "4111\u{2212}1111\u{2212}1111\u{2212}1111",
        ] {
            let masked = mask_card_numbers(&format!("моя карта {input} списали"));
            assert!(masked.contains("[card number]"), "{input:?} -> {masked}");
            assert!(
                masked.chars().filter(|c| c.is_numeric()).count() < 4,
                "{input:?} -> {masked}"
            );
        }
        for text in ["сумма １ ０００ ₽", "телефон ８ ９９９ １２３-４５-６７"]
        {
            assert_eq!(mask_card_numbers(text), text);
        }
    }

    #[test]
    fn amounts_phones_and_dates_are_not_masked() {
        for text in [
            "was charged $1,000",
            "order 123456",
            "call +7 999 123-45-67",
            "on 2026-12-01 at 10:30",
            "limit 150 000 RUB",
            "fee 1.5% for 12 months",
        ] {
            assert_eq!(mask_card_numbers(text), text);
        }
        assert_eq!(
            mask_card_numbers("my card 4111 1111 1111 1111 was charged $1,000"),
            "my card [card number] was charged $1,000"
        );
    }

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        let forged = "fees?\n2026-12-01T00:00:00Z  INFO novapay: admin logged in\x1b[2J\u{202e}";
        let safe = user_text(forged);
        assert!(!safe.contains('\n') && !safe.contains('\x1b') && !safe.contains('\u{202e}'));
        assert!(
            safe.contains("\\n2026") && safe.contains("\\u{1b}[2J"),
            "{safe}"
        );
        assert_eq!(user_text("Привет, мир"), "Привет, мир");
        assert_eq!(user_text(&"x".repeat(5000)).chars().count(), 1001);
    }

    #[test]
    fn a_secret_is_shown_as_a_short_hash() {
        let hint = secret_hint("831c76b092f9f135d9b6b36c3a720757");
        assert!(hint.starts_with("sha256:") && hint.len() == 15, "{hint}");
        assert!(!hint.contains("831c76"));
    }
}
