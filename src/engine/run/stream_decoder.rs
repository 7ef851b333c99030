//! Incremental detokenization that never emits a broken character: byte-level tokens can end in the
//! middle of a UTF-8 sequence (Cyrillic letters and emoji often do), so bytes are held back until they
//! form complete characters.

#[derive(Debug, Default)]
pub struct Utf8StreamDecoder {
    pending: Vec<u8>,
}

impl Utf8StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: from_utf8 vouched for the first `valid` bytes.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace them and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left at the end of generation; an unfinished character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Holds back text that might be the start of a stop string, so a stop string is never shown.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

pub enum StopOutcome {
    /// Text safe to show now; generation goes on.
    Continue(String),
    /// Text before the stop string; generation ends.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.pending.push_str(text);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|k| s.is_char_boundary(*k))
                    .find(|k| self.pending.ends_with(&s[..*k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Continue(out)
    }

    /// What is left when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_split_across_pieces_are_caught_and_never_shown() {
        let mut m = StopMatcher::new(&["\n[1] (".to_string()]);
        let mut shown = String::new();
        for piece in ["The fee is 0.5%.", "\n", "[", "1", "] (fees.md)"] {
            match m.push(piece) {
                StopOutcome::Continue(t) => shown.push_str(&t),
                StopOutcome::Stopped(t) => {
                    shown.push_str(&t);
                    assert_eq!(shown, "The fee is 0.5%.");
                    return;
                }
            }
        }
        panic!("stop string not detected: {shown:?}");
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        let mut m = StopMatcher::new(&["\nQuestion:".to_string()]);
        let mut shown = String::new();
        for piece in ["a", "\n", "Que", "ue"] {
            if let StopOutcome::Continue(t) = m.push(piece) {
                shown.push_str(&t);
            }
        }
        shown.push_str(&m.finish());
        assert_eq!(shown, "a\nQueue");
    }

    #[test]
    fn cyrillic_split_across_tokens_is_held_until_complete() {
        let bytes = "Привет".as_bytes();
        let mut d = Utf8StreamDecoder::new();
        let mut out = Vec::new();
        for b in bytes {
            out.push(d.push(&[*b]));
        }
        assert!(out.iter().all(|piece| !piece.contains('\u{FFFD}')));
        assert_eq!(out.concat(), "Привет");
        assert_eq!(out[0], "", "half a letter must not be emitted");
    }

    #[test]
    fn invalid_bytes_become_replacement_and_stream_continues() {
        let mut d = Utf8StreamDecoder::new();
        assert_eq!(d.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(d.push(&[0xD0]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
