//! Nesting limits checked before a payload is parsed, so a deep payload is
//! skipped and counted whatever the build profile and stack size.

use crate::json_text::{Strings, count_bytes};

/// Whether JSON text opens more than `limit` nested objects or arrays. A
/// payload with at most `limit` brackets in all is answered by one counting
/// pass; only the rare one with more is walked string by string.
pub(super) fn json_nests_deeper_than(payload: &[u8], limit: usize) -> bool {
    let openers = count_bytes(payload, |b| b == b'[' || b == b'{');
    if openers <= limit {
        return false;
    }
    let (mut depth, mut strings) = (0usize, Strings::default());
    for &byte in payload {
        if strings.feed(byte) {
            continue;
        }
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether a MessagePack value nests more than `limit` maps or arrays. Walks
/// the markers without recursion; a truncated or invalid payload answers
/// `false` and is left to the decoder to report.
pub(super) fn msgpack_nests_deeper_than(payload: &[u8], limit: usize) -> bool {
    // Every container starts with one of these bytes; a payload with at most
    // `limit` of them (counting look-alikes inside strings and numbers too)
    // cannot nest deeper, and is answered by one counting pass.
    let markers = count_bytes(payload, |b| matches!(b, 0x80..=0x9f | 0xdc..=0xdf));
    if markers <= limit {
        return false;
    }
    // Items still to read in each open container; the root holds one value.
    let mut pending: Vec<u64> = vec![1];
    let mut pos = 0usize;
    let len_at = |at: usize, width: usize| -> Option<u64> {
        let bytes = payload.get(at..at.checked_add(width)?)?;
        Some(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    };
    while let Some(last) = pending.last_mut() {
        if *last == 0 {
            pending.pop();
            continue;
        }
        *last -= 1;
        let Some(&marker) = payload.get(pos) else {
            return false;
        };
        // (bytes of this item before its children, children to read)
        let (skip, children): (Option<u64>, u64) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (Some(1), 0),
            0x80..=0x8f => (Some(1), u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => (Some(1), u64::from(marker & 0x0f)),
            0xa0..=0xbf => (Some(1 + u64::from(marker & 0x1f)), 0),
            0xc4 | 0xd9 => (len_at(pos + 1, 1).map(|n| 2 + n), 0),
            0xc5 | 0xda => (len_at(pos + 1, 2).map(|n| 3 + n), 0),
            0xc6 | 0xdb => (len_at(pos + 1, 4).map(|n| 5 + n), 0),
            0xc7 => (len_at(pos + 1, 1).map(|n| 3 + n), 0),
            0xc8 => (len_at(pos + 1, 2).map(|n| 4 + n), 0),
            0xc9 => (len_at(pos + 1, 4).map(|n| 6 + n), 0),
            0xcc | 0xd0 => (Some(2), 0),
            0xcd | 0xd1 => (Some(3), 0),
            0xca | 0xce | 0xd2 => (Some(5), 0),
            0xcb | 0xcf | 0xd3 => (Some(9), 0),
            0xd4 => (Some(3), 0),
            0xd5 => (Some(4), 0),
            0xd6 => (Some(6), 0),
            0xd7 => (Some(10), 0),
            0xd8 => (Some(18), 0),
            0xdc => (Some(3), len_at(pos + 1, 2).unwrap_or(0)),
            0xdd => (Some(5), len_at(pos + 1, 4).unwrap_or(0)),
            0xde => (Some(3), len_at(pos + 1, 2).unwrap_or(0) * 2),
            0xdf => (Some(5), len_at(pos + 1, 4).unwrap_or(0) * 2),
            0xc1 => (None, 0),
        };
        let Some(next) = skip
            .and_then(|skip| usize::try_from(skip).ok())
            .and_then(|skip| pos.checked_add(skip))
        else {
            return false;
        };
        pos = next;
        if matches!(marker, 0x80..=0x9f | 0xdc..=0xdf) {
            if pending.len() > limit {
                return true;
            }
            pending.push(children);
        }
    }
    false
}
