//! The control channels' names (wire contract, shared with other languages)
//! and the rule that keeps them apart from room channels.
//!
//! | channel | who subscribes | what goes there |
//! |---|---|---|
//! | `{control_prefix}all` | every connected node | frames for every node (heartbeats) |
//! | `{control_prefix}node:{node_id}` | the node `node_id` only | frames for that node (query answers) |
//!
//! The default control prefix is `rooms-control:{channel_prefix}`, e.g.
//! `rooms-control:sse:room:` for the default channel prefix `sse:room:`.
//! Frames are opaque bytes, published with `PUBLISH` (`SPUBLISH` on a
//! cluster) like envelopes.

use rooms_adapter::adapter::ControlTarget;
use rooms_adapter::{Error, NodeId};

/// What the default control prefix puts in front of the channel prefix.
pub const CONTROL_PREFIX_BASE: &str = "rooms-control:";

/// The default control prefix for `channel_prefix`:
/// `rooms-control:{channel_prefix}`.
///
/// ```
/// use rooms_adapter_redis::default_control_prefix;
/// assert_eq!(default_control_prefix("sse:room:"), "rooms-control:sse:room:");
/// ```
pub fn default_control_prefix(channel_prefix: &str) -> String {
    format!("{CONTROL_PREFIX_BASE}{channel_prefix}")
}

/// The broadcast channel: `{control_prefix}all`.
pub(crate) fn all_channel(control_prefix: &str) -> String {
    format!("{control_prefix}all")
}

/// A node's inbox: `{control_prefix}node:{node}`.
pub(crate) fn node_channel(control_prefix: &str, node: &NodeId) -> String {
    format!("{control_prefix}node:{}", node.as_str())
}

/// The channels node `node` subscribes: the broadcast channel and its inbox.
pub(crate) fn channels_of(control_prefix: &str, node: &NodeId) -> [String; 2] {
    [
        all_channel(control_prefix),
        node_channel(control_prefix, node),
    ]
}

/// The channel a frame for `target` goes to (`None`: a target this adapter
/// does not know).
pub(crate) fn target_channel(control_prefix: &str, target: &ControlTarget) -> Option<String> {
    match target {
        ControlTarget::All => Some(all_channel(control_prefix)),
        ControlTarget::Node(node) => Some(node_channel(control_prefix, node)),
        // A target added to the contract later.
        _ => None,
    }
}

/// Whether some control channel could also be a room channel
/// (`{channel_prefix}{room}` for some room name), for any node id.
pub(crate) fn overlaps(channel_prefix: &str, control_prefix: &str) -> bool {
    let all = all_channel(control_prefix);
    let inbox = format!("{control_prefix}node:");
    all.starts_with(channel_prefix)
        || inbox.starts_with(channel_prefix)
        // Room channels all begin with the channel prefix; the inbox of a
        // node whose id begins like the rest of it is one of them.
        || channel_prefix.starts_with(&inbox)
}

/// The control prefix in use: `None` when control is off, or when the
/// derived default would collide with room channels. An explicit prefix
/// that collides is a configuration error naming both prefixes.
pub(crate) fn resolve(
    enabled: bool,
    explicit: Option<&str>,
    channel_prefix: &str,
) -> Result<Option<String>, Error> {
    if !enabled {
        return Ok(None);
    }
    match explicit {
        Some(prefix) if overlaps(channel_prefix, prefix) => Err(Error::Config(format!(
            "control_prefix {prefix:?} makes control channels ({prefix}all, {prefix}node:<id>) \
             look like room channels of channel_prefix {channel_prefix:?}: choose prefixes \
             that do not start with one another"
        ))),
        Some(prefix) => Ok(Some(prefix.to_owned())),
        None => {
            let derived = default_control_prefix(channel_prefix);
            if overlaps(channel_prefix, &derived) {
                Ok(None)
            } else {
                Ok(Some(derived))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_the_wire_contract() {
        let prefix = default_control_prefix("sse:room:");
        assert_eq!(prefix, "rooms-control:sse:room:");
        let node = NodeId::from("node-b");
        assert_eq!(
            channels_of(&prefix, &node),
            [
                "rooms-control:sse:room:all".to_owned(),
                "rooms-control:sse:room:node:node-b".to_owned()
            ]
        );
        assert_eq!(
            target_channel(&prefix, &ControlTarget::All).as_deref(),
            Some("rooms-control:sse:room:all")
        );
        assert_eq!(
            target_channel(&prefix, &ControlTarget::Node(node)).as_deref(),
            Some("rooms-control:sse:room:node:node-b")
        );
    }

    #[test]
    fn overlapping_prefixes_are_caught() {
        // The default prefixes are apart.
        assert!(!overlaps("sse:room:", "rooms-control:sse:room:"));
        assert!(!overlaps("app:", "ctl:"));
        // The control prefix starts with the channel prefix.
        assert!(overlaps("", "rooms-control:"));
        assert!(overlaps("sse:", "sse:control:"));
        // The channel prefix reaches into the control channel names.
        assert!(overlaps("ctl:node:", "ctl:"));
        assert!(overlaps("ctl:node:eu-", "ctl:"));
        assert!(overlaps("ctl:nod", "ctl:"));
        assert!(overlaps("ctl:al", "ctl:"));
        // Starts like the control prefix, yet no control channel matches.
        assert!(!overlaps("ctl:rooms:", "ctl:"));
    }

    #[test]
    fn resolve_derives_takes_the_explicit_one_or_turns_control_off() {
        let resolved = |enabled, explicit, channel_prefix| {
            resolve(enabled, explicit, channel_prefix).ok().flatten()
        };
        assert_eq!(
            resolved(true, None, "sse:room:").as_deref(),
            Some("rooms-control:sse:room:")
        );
        assert_eq!(
            resolved(true, Some("ctl:"), "sse:room:").as_deref(),
            Some("ctl:")
        );
        assert_eq!(resolved(false, None, "sse:room:"), None);
        // The derived default of an empty channel prefix collides: off.
        assert_eq!(resolved(true, None, ""), None);
        assert!(resolve(true, None, "").is_ok());
        // An explicit one that collides is an error naming both.
        let error = resolve(true, Some("sse:room:ctl:"), "sse:room:")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("\"sse:room:ctl:\"") && error.contains("\"sse:room:\""),
            "{error}"
        );
        // An empty channel prefix makes every channel a room channel.
        assert!(resolve(true, Some("ctl:"), "").is_err());
    }
}
