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

#[cfg(test)]
mod tests {
    use super::*;

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
