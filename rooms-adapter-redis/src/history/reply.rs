//! The parsing of the history scripts' replies: positions, pages, entries.

use bytes::Bytes;
use redis::Value;
use rooms_adapter::Error;
use rooms_adapter::adapter::AdapterCounters;
use rooms_adapter::history::{HistoryEntry, HistoryPage, Position};
use rooms_adapter::wire::{self, DecodeError};

fn unexpected(what: &str, value: &Value) -> Error {
    Error::Backend {
        context: format!("history {what}: unexpected reply {value:?}"),
        retryable: false,
        source: Box::new(crate::error::Message("unexpected script reply".into())),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `{n}-0` → `n`.
fn entry_offset(id: &str) -> Option<u64> {
    let (offset, seq) = id.split_once('-')?;
    (seq == "0").then_some(())?;
    offset.parse().ok()
}

/// The position the publish script returned.
pub(crate) fn parse_position(value: &Value) -> Result<Position, Error> {
    if let Value::Array(items) = value
        && let [epoch, offset] = items.as_slice()
        && let (Some(epoch), Some(offset)) = (text(epoch), integer(offset))
        && let Some(position) = Position::new(&epoch, offset)
    {
        return Ok(position);
    }
    Err(unexpected("publish", value))
}

/// What a read asked for: entries after `after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadRequest {
    pub(crate) after: Option<u64>,
    pub(crate) limit: usize,
}

/// The page the read script returned for `request`; entries that do not
/// decode are skipped and counted on `counters` for `room` (the next page
/// still starts after them).
pub(crate) fn parse_page(
    value: &Value,
    request: ReadRequest,
    room: &str,
    max_payload_bytes: usize,
    counters: &AdapterCounters,
) -> Result<HistoryPage, Error> {
    let Value::Array(items) = value else {
        return Err(unexpected("read", value));
    };
    let [epoch, latest, first, entries] = items.as_slice() else {
        return Err(unexpected("read", value));
    };
    let (Some(epoch), Some(latest), Some(first)) = (text(epoch), integer(latest), text(first))
    else {
        return Err(unexpected("read", value));
    };
    if Position::new(&epoch, 0).is_none() {
        // No history (or a meta hash that is not ours): a fresh epoch.
        return Ok(HistoryPage::empty());
    }
    let first = entry_offset(&first).unwrap_or(latest.saturating_add(1));
    let raw = match entries {
        Value::Array(raw) => raw.as_slice(),
        Value::Nil => &[],
        other => return Err(unexpected("read", other)),
    };
    let mut decoded = Vec::with_capacity(raw.len());
    let mut last_read = None;
    for entry in raw {
        last_read = raw_offset(entry).or(last_read);
        match decode_entry(entry, max_payload_bytes) {
            Ok(entry) => decoded.push(entry),
            Err(error) => counters.record_decode_error(room, &error),
        }
    }
    let next_after = HistoryPage::next_after_of(
        request.after,
        request.limit,
        last_read,
        raw.len(),
        first,
        latest,
    );
    Ok(HistoryPage {
        epoch,
        latest,
        entries: decoded,
        first,
        next_after,
    })
}

/// The offset of a raw stream entry, even one whose payload does not decode.
fn raw_offset(entry: &Value) -> Option<u64> {
    match entry {
        Value::Array(parts) => entry_offset(&text(parts.first()?)?),
        _ => None,
    }
}

/// One stream entry: `[id, [field, value, ...]]`.
fn decode_entry(entry: &Value, max_payload_bytes: usize) -> Result<HistoryEntry, DecodeError> {
    let invalid = |reason: &str| DecodeError::InvalidField {
        field: "d",
        reason: format!("history entry: {reason}"),
    };
    let Value::Array(parts) = entry else {
        return Err(invalid("not a stream entry"));
    };
    let [id, fields] = parts.as_slice() else {
        return Err(invalid("not a stream entry"));
    };
    let offset = text(id)
        .as_deref()
        .and_then(entry_offset)
        .ok_or_else(|| invalid("entry id is not {offset}-0"))?;
    let fields = match fields {
        Value::Array(fields) => fields.as_slice(),
        _ => return Err(invalid("no fields")),
    };
    let payload = fields
        .chunks_exact(2)
        .find_map(|pair| match pair {
            [Value::BulkString(name), Value::BulkString(value)] if name == b"d" => {
                Some(Bytes::copy_from_slice(value))
            }
            _ => None,
        })
        .ok_or(DecodeError::MissingField { field: "d" })?;
    let envelope = wire::decode(&payload, max_payload_bytes)?;
    Ok(HistoryEntry { offset, envelope })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rooms_adapter::history::EPOCH_LEN;

    #[test]
    fn replies_parse() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let position = parse_position(&Value::Array(vec![bulk("0123456789ab"), Value::Int(7)]));
        assert_eq!(position.ok().map(|p| p.offset()), Some(7));
        assert!(parse_position(&Value::Array(vec![bulk("zz"), Value::Int(7)])).is_err());
        let counters = AdapterCounters::default();
        let request = ReadRequest {
            after: Some(7),
            limit: 2,
        };
        let page = parse_page(
            &Value::Array(vec![
                bulk("0123456789ab"),
                Value::Int(9),
                bulk("8-0"),
                Value::Array(vec![
                    Value::Array(vec![
                        bulk("8-0"),
                        Value::Array(vec![bulk("d"), bulk("garbage")]),
                    ]),
                    Value::Array(vec![bulk("9-0"), Value::Array(vec![])]),
                ]),
            ]),
            request,
            "r",
            1024,
            &counters,
        )
        .expect("a page");
        assert_eq!((page.first, page.latest, page.entries.len()), (8, 9, 0));
        assert_eq!(page.next_after, None, "9 is the latest");
        assert_eq!(counters.snapshot(0, None).decode_errors_total(), 2);
        let empty = parse_page(
            &Value::Array(vec![
                bulk(""),
                Value::Int(0),
                bulk(""),
                Value::Array(vec![]),
            ]),
            request,
            "r",
            1024,
            &counters,
        )
        .expect("a page");
        assert_eq!((empty.first, empty.latest), (1, 0));
        assert_eq!(empty.epoch.len(), EPOCH_LEN);
    }
}
