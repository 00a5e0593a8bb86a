//! Helpers of the history tests: the policy, messages, the key layout of the
//! wire contract (computed independently of the crate), raw queries and reads.

use std::time::Duration;

use rooms_adapter::adapter::RoomAdapter;
use rooms_adapter::history::{HistoryPage, HistoryPolicy};
use rooms_adapter::{Envelope, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::{RedisAdapter, key_slot, redis};

use super::raw;

pub const TTL: Duration = Duration::from_secs(60);

/// `XRANGE` reply entry: id and field/value pairs.
pub type StreamEntry = (String, Vec<(String, Vec<u8>)>);

pub fn policy(max_len: usize) -> HistoryPolicy {
    HistoryPolicy::new(max_len, TTL).expect("valid policy")
}

pub fn message(data: &str) -> Envelope {
    Envelope::new(NodeId::from("a"), SseMessage::new(data))
}

pub fn data_of(envelope: &Envelope) -> String {
    serde_json::from_str::<String>(envelope.message().data.as_json()).expect("a JSON string")
}

/// The slot tag of the wire contract, computed independently: the first of
/// `0`..`z`, `00`..`zz`, `000`.. (base 36 over `0-9a-z`) in `slot`.
pub fn expected_tag(slot: u16) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for len in 1..=4u32 {
        for n in 0..36u64.pow(len) {
            let mut digits = vec![b'0'; len as usize];
            let mut rest = n;
            for digit in digits.iter_mut().rev() {
                *digit = ALPHABET[(rest % 36) as usize];
                rest /= 36;
            }
            if key_slot(&digits) == slot {
                return String::from_utf8(digits).expect("ascii");
            }
        }
    }
    panic!("no tag for slot {slot}")
}

/// The stream and meta keys of `channel`.
pub fn keys_of(channel: &str) -> (String, String) {
    let tag = expected_tag(key_slot(channel.as_bytes()));
    (
        format!("rooms-history:{{{tag}}}:{channel}"),
        format!("rooms-history-meta:{{{tag}}}:{channel}"),
    )
}

/// `cmd` on a connection of its own.
pub async fn query<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> T {
    let mut connection = raw(url).await;
    cmd.query_async(&mut connection).await.expect("raw command")
}

/// Everything after `after` (up to 10,000 entries).
pub async fn read(adapter: &RedisAdapter, room: &RoomName, after: Option<u64>) -> HistoryPage {
    adapter
        .read_history(room, after, 10_000)
        .await
        .expect("read")
}

pub fn offsets(page: &HistoryPage) -> Vec<u64> {
    page.entries.iter().map(|entry| entry.offset).collect()
}
