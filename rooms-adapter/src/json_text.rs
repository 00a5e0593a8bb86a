//! Byte-level reading of JSON text without parsing it: which bytes belong to
//! strings, how many bytes of a kind there are. Shared by the nesting check
//! on decode and the SSE framing of raw JSON data.

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

/// How many bytes of `payload` `counted` accepts. Counted per chunk of 255
/// bytes into a `u8`, a loop the compiler turns into vector instructions:
/// the nesting checks and the SSE framing run it on every message (with
/// `filter().count()` it cost about 4 instructions per byte).
pub(crate) fn count_bytes(payload: &[u8], counted: impl Fn(u8) -> bool) -> usize {
    payload
        .chunks(255)
        .map(|chunk| {
            let in_chunk = chunk
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(counted(b))));
            usize::from(in_chunk)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{Strings, count_bytes};

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

    #[test]
    fn count_bytes_counts_across_chunks_of_every_size() {
        for len in [0, 1, 254, 255, 256, 510, 511, 1_000] {
            let all = vec![b'['; len];
            assert_eq!(count_bytes(&all, |b| b == b'['), len, "{len} markers");
            let every_third: Vec<u8> = (0..len)
                .map(|i| if i % 3 == 0 { b'{' } else { b'a' })
                .collect();
            assert_eq!(
                count_bytes(&every_third, |b| b == b'{'),
                len.div_ceil(3),
                "{len} bytes"
            );
        }
    }
}
