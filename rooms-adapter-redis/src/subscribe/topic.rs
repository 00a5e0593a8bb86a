//! [`Topic`]: what one subscription is for, a room or a control channel.

use std::fmt;
use std::sync::Arc;

use rooms_adapter::{RoomName, wire};

/// What the subscriber holds a channel for.
///
/// Rooms come and go with their members, are counted in the adapter's
/// subscriptions and listed in `Reconnected`. Control channels are wanted
/// from connect to disconnect and are never counted or listed; their frames
/// are handed over undecoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Topic {
    /// A room: channel `{prefix}{room}`.
    Room(RoomName),
    /// A control channel, by its full name.
    Control(Arc<str>),
}

impl Topic {
    /// A control channel.
    pub(crate) fn control(channel: impl Into<Arc<str>>) -> Self {
        Topic::Control(channel.into())
    }

    /// The channel on Redis, given the rooms' channel prefix.
    pub(crate) fn channel(&self, prefix: &str) -> String {
        match self {
            Topic::Room(room) => wire::channel_name(prefix, room.as_str()),
            Topic::Control(channel) => channel.to_string(),
        }
    }

    /// The room, when it is one.
    pub(crate) fn room(&self) -> Option<&RoomName> {
        match self {
            Topic::Room(room) => Some(room),
            Topic::Control(_) => None,
        }
    }

    /// Whether it is a room.
    pub(crate) fn is_room(&self) -> bool {
        matches!(self, Topic::Room(_))
    }
}

impl From<RoomName> for Topic {
    fn from(room: RoomName) -> Self {
        Topic::Room(room)
    }
}

impl From<&str> for Topic {
    /// A room by name.
    fn from(room: &str) -> Self {
        Topic::Room(RoomName::from(room))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Room(room) => write!(f, "room {:?}", room.as_str()),
            Topic::Control(channel) => write!(f, "control channel {channel:?}"),
        }
    }
}
