//! Names of things: [`NodeId`], [`ConnectionId`] and [`RoomName`].
//!
//! Each is a cheap-to-clone, reference-counted string. They are distinct types so a
//! room name cannot be passed where a connection id is expected.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string.
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                Self(value.into())
            }

            /// The string itself.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.into())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value.into())
            }
        }

        impl From<&String> for $name {
            fn from(value: &String) -> Self {
                Self(value.as_str().into())
            }
        }

        impl From<&$name> for $name {
            fn from(value: &$name) -> Self {
                value.clone()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

string_id!(
    /// The id of one server node. Envelopes carry it (`n`) so a node can drop its
    /// own messages when the medium echoes them back.
    ///
    /// One [`Rooms`](crate::Rooms) engine owns exactly one node id and hands it to
    /// its adapter; the adapter never invents its own.
    NodeId
);

string_id!(
    /// The id of one client connection (an SSE stream, a WebSocket, ...), unique
    /// across the cluster. Envelopes carry it (`e`) to exclude a sender.
    ConnectionId
);

string_id!(
    /// The name of a room. Any string is allowed, including the empty string; the
    /// channel on the medium is `{prefix}{room}`.
    RoomName
);

impl NodeId {
    /// A fresh random (v4 UUID) node id, the default.
    pub fn random() -> Self {
        Self::new(uuid::Uuid::new_v4().to_string())
    }
}

impl ConnectionId {
    /// A fresh random (v4 UUID) connection id.
    pub fn random() -> Self {
        Self::new(uuid::Uuid::new_v4().to_string())
    }
}
