//! Byte-level reading of JSON text without parsing it: which bytes belong to
//! strings. Shared by the nesting check on decode and the SSE framing of raw
//! JSON data.

/// Follows JSON text byte by byte and tells which bytes belong to a string
/// (its quotes included), honouring backslash escapes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Strings {
    inside: bool,
    escaped: bool,
}

impl Strings {
    /// Feeds the next byte; true if it is part of a string.
    pub(crate) fn feed(&mut self, byte: u8) -> bool {
        if self.inside {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.inside = false;
            }
            true
        } else {
            self.inside = byte == b'"';
            self.inside
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Strings;

    #[test]
    fn marks_strings_with_their_quotes_and_escapes() {
        let text = br#"[1,"a\"]",{"k":2}]"#;
        let mut strings = Strings::default();
        let marks: String = text
            .iter()
            .map(|&b| if strings.feed(b) { 's' } else { '.' })
            .collect();
        assert_eq!(marks, "...ssssss..sss....");
    }
}
