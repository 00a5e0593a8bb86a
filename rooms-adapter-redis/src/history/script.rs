//! The two Lua scripts of the history (publish and read) and their calls.

use std::sync::OnceLock;

use rooms_adapter::Error;
use rooms_adapter::history::{EPOCH_LEN, new_epoch};

use super::keys_of;
use crate::expiry;
use crate::publish::{ScriptArg, ScriptCall};
use crate::subscribe::key_slot;

/// Stores and publishes one message (see the crate docs).
///
/// KEYS: stream, meta. ARGV: channel, a fresh epoch, max_len, the low mark
/// in ms (the ttl plus half the slack; `0`: skip the expiry check, see
/// [`expiry`](crate::expiry)), the expiry to set in ms (the ttl plus the
/// slack), the publish command
/// (`PUBLISH` or `SPUBLISH`), then the payload: whole (a message with an id
/// of its own), or in two parts, before and after the place of its id (the
/// script puts the position's id between them). Returns `{epoch, offset}`.
///
/// A publish is three commands (`HGET`, `HINCRBY`, `XADD`) and the
/// publish, plus a `PTTL` when the node asks for the expiry check (about
/// once per 32nd of the ttl per room); a new epoch (no history, or keys
/// that are not ours) costs a few more. The keys' expiry is refreshed only
/// when less than the low mark, or more than the ttl plus the slack, is
/// left (a policy with a shorter ttl), and then set to the ttl plus the
/// slack: a busy room's publish skips two `PEXPIRE`s most of the time, and
/// history lives between the ttl and the ttl plus the slack after the
/// room's last message.
pub(crate) const PUBLISH_SCRIPT: &str = r#"
local epoch = redis.pcall('HGET', KEYS[2], 'e')
local offset = nil
if type(epoch) == 'string' and #epoch == 12 and not string.find(epoch, '[^0-9a-f]') then
  offset = redis.pcall('HINCRBY', KEYS[2], 'o', 1)
  if type(offset) ~= 'number' or offset < 1 then
    offset = nil
  end
end
local refresh = true
if not offset then
  -- No history (or a meta hash that is not ours): a new epoch.
  epoch = ARGV[2]
  offset = 1
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', offset)
elseif ARGV[4] == '0' then
  -- The node checked within the last half slack: the keys have the ttl.
  refresh = false
else
  local left = redis.call('PTTL', KEYS[2])
  refresh = left < tonumber(ARGV[4]) or left > tonumber(ARGV[5])
end
local payload = ARGV[7]
if ARGV[8] then
  payload = payload .. 'h1.' .. epoch .. string.format('.%016x', offset) .. ARGV[8]
end
local id = string.format('%d-0', offset)
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', ARGV[3], id, 'd', payload)
if type(added) == 'table' and added.err then
  -- Not a stream, or entries beyond our offset: not ours, dropped.
  redis.call('DEL', KEYS[1])
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], id, 'd', payload)
  refresh = true
end
if refresh then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call(ARGV[6], ARGV[1], payload)
return {epoch, offset}
"#;

/// Reads a room's history.
///
/// KEYS: stream, meta. ARGV: the first entry id wanted (`{n}-0`, or `-`),
/// or `` to read no entries; the most entries to read. Returns `{epoch or
/// '', latest, oldest entry id or '', entries}`. Keys of another type read
/// as no history.
pub(crate) const READ_SCRIPT: &str = r#"
local meta = redis.pcall('HMGET', KEYS[2], 'e', 'o')
if meta.err or not meta[1] then
  return {'', 0, '', {}}
end
local oldest = redis.pcall('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if oldest.err then
  oldest = {}
end
local first = ''
if #oldest > 0 then
  first = oldest[1][1]
end
local entries = {}
if ARGV[1] ~= '' and #oldest > 0 and tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {meta[1], tonumber(meta[2]) or 0, first, entries}
"#;

/// The publish script.
pub(crate) fn publish_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PUBLISH_SCRIPT))
}

/// The read script.
pub(crate) fn read_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(READ_SCRIPT))
}

/// A placeholder id: the shape of a position id (`h1.` 12 chars `.` 16
/// chars, [`POSITION_ID_LEN`](rooms_adapter::history::POSITION_ID_LEN)
/// bytes) in random letters `g`..`v`, so never a position and not
/// guessable by the author of a message.
pub(crate) fn placeholder() -> String {
    let random: String = [new_epoch(), new_epoch(), new_epoch()].concat();
    let letter = |b: u8| {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => 0,
        };
        char::from(b'g' + nibble)
    };
    let mut letters = random.bytes().map(letter);
    let mut id = String::from("h1.");
    id.extend(letters.by_ref().take(EPOCH_LEN));
    id.push('.');
    id.extend(letters.take(16));
    id
}

/// The publish script's call for one message.
pub(crate) struct PublishArgs<'a> {
    pub(crate) channel: &'a str,
    /// The encoded envelope.
    pub(crate) payload: &'a [u8],
    /// The placeholder id in `payload`, where the script puts the
    /// position's id; empty when the message has an id of its own.
    pub(crate) placeholder: &'a str,
    pub(crate) max_len: usize,
    pub(crate) ttl_ms: u128,
    /// Whether the script checks the keys' expiry (`PTTL`).
    pub(crate) check_expiry: bool,
    pub(crate) sharded: bool,
}

impl PublishArgs<'_> {
    /// The call; an error when the placeholder is not in the payload.
    pub(crate) fn call(&self) -> Result<ScriptCall, Error> {
        let (stream, meta) = keys_of(self.channel);
        let epoch = fresh_epoch();
        let (head, tail) = if self.placeholder.is_empty() {
            (self.payload, None)
        } else {
            let at = memchr::memmem::find(self.payload, self.placeholder.as_bytes())
                .ok_or_else(|| internal("publish: no placeholder id in the encoded payload"))?;
            let (head, rest) = self.payload.split_at(at);
            (head, rest.get(self.placeholder.len()..))
        };
        let args = [
            ScriptArg::Bytes(self.channel.as_bytes()),
            ScriptArg::Bytes(epoch.as_bytes()),
            ScriptArg::Number(self.max_len as u128),
            ScriptArg::Number(if self.check_expiry {
                expiry::low_ms(self.ttl_ms)
            } else {
                0
            }),
            ScriptArg::Number(expiry::expiry_ms(self.ttl_ms)),
            ScriptArg::Bytes(if self.sharded {
                b"SPUBLISH"
            } else {
                b"PUBLISH"
            }),
            ScriptArg::Bytes(head),
        ];
        Ok(ScriptCall::new(
            PUBLISH_SCRIPT,
            publish_script(),
            key_slot(self.channel.as_bytes()),
            &[stream.as_bytes(), meta.as_bytes()],
            args.into_iter().chain(tail.map(ScriptArg::Bytes)),
        ))
    }
}

/// A fresh epoch: 12 lowercase hex digits of a random 48-bit number, drawn
/// without a system call (SipHash of a counter under this thread's random
/// keys, which `RandomState` draws once and then varies for each
/// instance).
fn fresh_epoch() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:012x}", n >> 16)
}

/// The read script's call for at most `limit` entries of a channel's
/// history after `after`.
pub(crate) fn read_call(channel: &str, after: Option<u64>, limit: usize) -> ScriptCall {
    let (stream, meta) = keys_of(channel);
    let start = match after {
        None => "-".to_owned(),
        Some(after) => after
            .checked_add(1)
            .map_or_else(String::new, |next| format!("{next}-0")),
    };
    ScriptCall::new(
        READ_SCRIPT,
        read_script(),
        key_slot(channel.as_bytes()),
        &[stream.as_bytes(), meta.as_bytes()],
        [
            ScriptArg::Bytes(start.as_bytes()),
            ScriptArg::Number(limit as u128),
        ],
    )
}

/// A history error that retrying cannot fix (a reply or payload this
/// adapter did not write).
fn internal(context: &str) -> Error {
    Error::Backend {
        context: format!("history {context}"),
        retryable: false,
        source: Box::new(crate::error::Message(context.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rooms_adapter::history::Position;

    #[test]
    fn placeholders_have_the_shape_of_a_position_and_are_not_one() {
        let a = placeholder();
        assert_eq!(a.len(), rooms_adapter::history::POSITION_ID_LEN);
        assert!(Position::parse(&a).is_none());
        assert_ne!(a, placeholder());
        assert!(
            a[3..]
                .bytes()
                .all(|b| b == b'.' || (b'g'..=b'v').contains(&b))
        );
    }

    #[test]
    fn publish_calls_carry_the_payload_split_at_the_placeholder() {
        let args = |cmd: &redis::Cmd| -> Vec<Vec<u8>> {
            cmd.args_iter()
                .filter_map(|arg| match arg {
                    redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
                    _ => None,
                })
                .collect()
        };
        let placeholder = placeholder();
        let payload = format!(r#"{{"m":{{"id":"{placeholder}","data":"{placeholder}"}}}}"#);
        let mut publish = PublishArgs {
            channel: "sse:room:r",
            payload: payload.as_bytes(),
            placeholder: &placeholder,
            max_len: 10,
            ttl_ms: 1_000,
            check_expiry: true,
            sharded: false,
        };
        let call = publish.call().expect("a call");
        let evalsha = args(&call.evalsha());
        assert_eq!(evalsha.len(), 2 + 1 + 2 + 8);
        assert_eq!(evalsha[0], b"EVALSHA");
        let tail = format!(r#"","data":"{placeholder}"}}}}"#);
        assert_eq!(
            &evalsha[5..],
            &[
                b"sse:room:r".to_vec(),
                evalsha[6].clone(),
                b"10".to_vec(),
                b"1031".to_vec(),
                b"1062".to_vec(),
                b"PUBLISH".to_vec(),
                br#"{"m":{"id":""#.to_vec(),
                tail.into_bytes(),
            ]
        );
        assert!(Position::new(std::str::from_utf8(&evalsha[6]).unwrap_or(""), 0).is_some());
        let eval = args(&call.eval());
        assert_eq!(eval[0], b"EVAL");
        assert_eq!(eval[1], PUBLISH_SCRIPT.as_bytes());
        assert_eq!(eval[2..], evalsha[2..]);

        // Within the node's quiet time: no expiry check (a low mark of 0).
        publish.check_expiry = false;
        let quiet = args(&publish.call().expect("a call").evalsha());
        assert_eq!((&quiet[8], &quiet[9]), (&b"0".to_vec(), &b"1062".to_vec()));

        // A message with an id of its own: the payload whole.
        publish.placeholder = "";
        let whole = args(&publish.call().expect("a call").evalsha());
        assert_eq!(whole.len(), 2 + 1 + 2 + 7);
        assert_eq!(whole.last().map(Vec::as_slice), Some(payload.as_bytes()));
        // No placeholder in the payload: an error, nothing sent.
        publish.placeholder = &placeholder;
        publish.payload = b"{}";
        assert!(publish.call().is_err());
        assert_ne!(fresh_epoch(), fresh_epoch());
    }
}
