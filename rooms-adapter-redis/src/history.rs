//! Room histories in Redis: the key layout here, the two Lua scripts and
//! their calls in [`script`], the parsing of their replies in [`reply`].
//! Wire contract (see the crate docs, "History").
//!
//! Per room, with `channel` = `{prefix}{room}`:
//! - `rooms-history:{T}:{channel}`: a Stream, one entry per message, entry
//!   id `{offset}-0`, field `d` = the encoded envelope (its message id set);
//! - `rooms-history-meta:{T}:{channel}`: a hash, `e` = the epoch (12
//!   lowercase hex digits), `o` = the last offset given out.
//!
//! `T` is the *slot tag* of the channel: the first string of the enumeration
//! `0`..`9`, `a`..`z`, `00`, `01`, .. `zz`, `000`, .. (every string of length
//! 1, then 2, then 3, each length in base-36 counting order over
//! `0-9a-z`) whose Redis Cluster hash slot equals the channel's. So both keys
//! live in the slot of the channel (whatever braces the channel itself
//! holds: the key's first `{..}` is `{T}`), and a script can touch them and
//! `SPUBLISH` on the channel on one shard.

use std::sync::OnceLock;

use crate::subscribe::{SLOT_COUNT, key_slot};

mod reply;
mod script;

pub(crate) use reply::{ReadRequest, parse_page, parse_position};
pub(crate) use script::{PublishArgs, placeholder, read_call};

/// Prefix of a room's history stream key.
pub(crate) const STREAM_PREFIX: &str = "rooms-history:";
/// Prefix of a room's history meta hash key.
pub(crate) const META_PREFIX: &str = "rooms-history-meta:";

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The slot tag of every slot, computed once.
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); usize::from(SLOT_COUNT)];
        let mut missing = usize::from(SLOT_COUNT);
        let mut len = 1u32;
        while missing > 0 {
            let count = 36u64.pow(len);
            for n in 0..count {
                let tag = base36(n, len);
                let slot = usize::from(key_slot(tag.as_bytes()));
                if tags[slot].is_empty() {
                    tags[slot] = tag;
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
            len += 1;
        }
        tags
    })
}

/// `n` in base 36 over [`ALPHABET`], left-padded with `0` to `len` digits.
fn base36(mut n: u64, len: u32) -> String {
    let mut digits = vec![b'0'; len as usize];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    digits.into_iter().map(char::from).collect()
}

/// The slot tag of `slot` (see the module docs).
pub(crate) fn slot_tag(slot: u16) -> &'static str {
    tags()
        .get(usize::from(slot))
        .map_or("0", |tag| tag.as_str())
}

/// The stream and meta keys of a room's channel.
pub(crate) fn keys_of(channel: &str) -> (String, String) {
    let tag = slot_tag(key_slot(channel.as_bytes()));
    // By hand: two `format!`s were a tenth of a publish's client-side cost.
    let key = |prefix: &str| {
        let mut key = String::with_capacity(prefix.len() + tag.len() + 3 + channel.len());
        key.push_str(prefix);
        key.push('{');
        key.push_str(tag);
        key.push_str("}:");
        key.push_str(channel);
        key
    };
    (key(STREAM_PREFIX), key(META_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_short_tag_of_its_slot() {
        for slot in 0..SLOT_COUNT {
            let tag = slot_tag(slot);
            assert!(!tag.is_empty() && tag.len() <= 4, "{slot}: {tag:?}");
            assert_eq!(key_slot(tag.as_bytes()), slot);
        }
        assert_eq!(slot_tag(key_slot(b"0")), "0");
        assert_eq!(slot_tag(277), "03bg");
        assert_eq!(base36(37, 2), "11");
    }

    #[test]
    fn keys_live_in_the_channel_slot() {
        for channel in [
            "sse:room:chat",
            "sse:room:{x}y",
            "sse:room:{}",
            "{a}b{c}",
            "",
        ] {
            let (stream, meta) = keys_of(channel);
            let slot = key_slot(channel.as_bytes());
            assert_eq!(key_slot(stream.as_bytes()), slot, "{stream}");
            assert_eq!(key_slot(meta.as_bytes()), slot, "{meta}");
            assert!(stream.starts_with(STREAM_PREFIX) && stream.ends_with(channel));
        }
    }
}
