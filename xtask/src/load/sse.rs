//! An incremental parser of SSE frames, fed whatever the socket reads.

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` if absent).
    pub event: String,
    /// `id:`, if the event had one.
    pub id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// An incremental SSE parser (the event-stream format of the HTML spec):
/// `event`, `id`, `data` and `retry` fields, comments, events ended by a blank
/// line. Lines end with `\n` or `\r\n` (a lone `\r` is not a line end here:
/// `sse-chat` never sends one).
#[derive(Debug, Default)]
pub struct SseParser {
    pub(super) buffer: Vec<u8>,
    pub(super) pending: Pending,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) event: String,
    pub(super) id: Option<String>,
    pub(super) data: String,
    pub(super) has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; calls `emit` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(SseEvent)) {
        // Complete lines straight from `chunk` when nothing is buffered.
        let (lines, tail): (&[u8], &[u8]) = if self.buffer.is_empty() {
            match chunk.iter().rposition(|&b| b == b'\n') {
                Some(last) => (&chunk[..=last], &chunk[last + 1..]),
                None => (&[], chunk),
            }
        } else {
            self.buffer.extend_from_slice(chunk);
            let buffer = std::mem::take(&mut self.buffer);
            let end = buffer
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |last| last + 1);
            self.lines(&buffer[..end], &mut emit);
            self.buffer = buffer;
            self.buffer.drain(..end);
            return;
        };
        self.lines(lines, &mut emit);
        self.buffer.extend_from_slice(tail);
    }

    pub(super) fn lines(&mut self, mut text: &[u8], emit: &mut impl FnMut(SseEvent)) {
        while let Some(end) = text.iter().position(|&b| b == b'\n') {
            let mut line = &text[..end];
            text = &text[end + 1..];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line);
            if let Some(event) = self.pending.line(&line) {
                emit(event);
            }
        }
    }
}

impl Pending {
    pub(super) fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                // The spec keeps the last event id across events; every
                // chat message here carries its own, so report per event.
                id: self.id.take(),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}
