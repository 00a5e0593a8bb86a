//! The control frames nodes exchange on an adapter's control channel
//! ([`RoomAdapter::publish_control`](crate::RoomAdapter::publish_control)):
//! an extension of the v1 wire format, in JSON whatever the room codec.
//!
//! Every frame is one JSON object with `"v": 1` and a `"type"`:
//!
//! | `type` | sent to | fields |
//! |---|---|---|
//! | `heartbeat` | all | `node`, `interval_ms`, `expiry_ms`, `connections`, `rooms` |
//! | `leave` | all | `node` |
//! | `query` | all | `node` (who asks), `id` (unique per asking node), `query` |
//! | `answer` | the asking node's inbox | `node` (who answers), `id` (the query's), `answer` |
//!
//! A `query` is `{"kind":"member_count","room":"<name>"}` or `{"kind":"rooms"}`;
//! its `answer` is `{"kind":"member_count","count":<n>}` or
//! `{"kind":"rooms","rooms":{"<name>":<members>,...}}` (local members only).
//! A node is live from its first heartbeat until `expiry_ms` after its last
//! one, or until its `leave`. Receivers ignore frames of another `v`, of an
//! unknown `type` or `kind`, and unknown fields, so the format can grow.
//!
//! ```
//! use rooms_adapter::cluster::frame::{ControlFrame, Heartbeat};
//!
//! let frame = ControlFrame::Heartbeat(Heartbeat {
//!     node: "node-a".into(),
//!     interval_ms: 2_000,
//!     expiry_ms: 6_000,
//!     connections: 12,
//!     rooms: 3,
//! });
//! let bytes = frame.encode();
//! assert_eq!(
//!     std::str::from_utf8(&bytes).unwrap(),
//!     r#"{"v":1,"type":"heartbeat","node":"node-a","interval_ms":2000,"expiry_ms":6000,"connections":12,"rooms":3}"#
//! );
//! assert_eq!(ControlFrame::decode(&bytes), Ok(frame));
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The control protocol's version, the frames' `"v"`.
pub const CONTROL_VERSION: u8 = 1;

/// One control frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlFrame {
    /// A node is alive.
    Heartbeat(Heartbeat),
    /// A node is shutting down: forget it now.
    Leave {
        /// The node's id.
        node: String,
    },
    /// A node asks every node for its local view.
    Query(Query),
    /// A node answers a query.
    Answer(Answer),
}

/// A node's periodic sign of life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node's id.
    pub node: String,
    /// How often the node sends heartbeats, in milliseconds.
    pub interval_ms: u64,
    /// How long after this heartbeat the node counts as gone without another.
    pub expiry_ms: u64,
    /// Local connections of the node.
    pub connections: u64,
    /// Rooms with local members on the node.
    pub rooms: u64,
}

/// A cross-node query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The asking node; answers go to its inbox.
    pub node: String,
    /// Unique among the asking node's queries.
    pub id: u64,
    /// What is asked.
    pub query: QueryKind,
}

/// What a query asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueryKind {
    /// The number of local members of a room.
    MemberCount {
        /// The room.
        room: String,
    },
    /// Every room with local members, with their counts.
    Rooms,
}

/// An answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The answering node.
    pub node: String,
    /// The query's id.
    pub id: u64,
    /// The answer.
    pub answer: AnswerKind,
}

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AnswerKind {
    /// The number of local members of the asked room.
    MemberCount {
        /// Local members.
        count: u64,
    },
    /// Every room with local members.
    Rooms {
        /// Room name to local members.
        rooms: HashMap<String, u64>,
    },
}

/// Why a control frame was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not a JSON control frame (or a field has the wrong type).
    #[error("malformed control frame: {0}")]
    Malformed(String),
    /// A `"v"` this node does not speak.
    #[error("control frame version {0} is not supported (this node speaks {CONTROL_VERSION})")]
    Version(u64),
    /// A frame without a node id.
    #[error("control frame without a node id")]
    NoNode,
}

/// The frame with its version, as sent.
#[derive(Serialize)]
struct Outgoing<'a> {
    v: u8,
    #[serde(flatten)]
    frame: &'a ControlFrame,
}

/// Only the version, read first so an unknown version is not a parse error.
#[derive(Deserialize)]
struct Version {
    v: Option<u64>,
}

impl ControlFrame {
    /// The frame as JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        let outgoing = Outgoing {
            v: CONTROL_VERSION,
            frame: self,
        };
        // Plain strings and integers: serialising cannot fail.
        serde_json::to_vec(&outgoing).unwrap_or_default()
    }

    /// Parses a frame. Unknown `type`s and `kind`s are
    /// [`FrameError::Malformed`]; the caller skips and counts them.
    pub fn decode(bytes: &[u8]) -> Result<ControlFrame, FrameError> {
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|error| FrameError::Malformed(error.to_string()))?;
        match version.v {
            Some(v) if v == u64::from(CONTROL_VERSION) => {}
            Some(v) => return Err(FrameError::Version(v)),
            None => return Err(FrameError::Malformed("no \"v\"".into())),
        }
        let frame: ControlFrame = serde_json::from_slice(bytes)
            .map_err(|error| FrameError::Malformed(error.to_string()))?;
        if frame.node().is_empty() {
            return Err(FrameError::NoNode);
        }
        Ok(frame)
    }

    /// The node that sent the frame.
    pub fn node(&self) -> &str {
        match self {
            ControlFrame::Heartbeat(heartbeat) => &heartbeat.node,
            ControlFrame::Leave { node } => node,
            ControlFrame::Query(query) => &query.node,
            ControlFrame::Answer(answer) => &answer.node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: ControlFrame) {
        assert_eq!(ControlFrame::decode(&frame.encode()), Ok(frame));
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(ControlFrame::Leave { node: "a".into() });
        round_trip(ControlFrame::Query(Query {
            node: "a".into(),
            id: 7,
            query: QueryKind::MemberCount {
                room: "odd \u{1F600} room\n".into(),
            },
        }));
        round_trip(ControlFrame::Query(Query {
            node: "a".into(),
            id: 8,
            query: QueryKind::Rooms,
        }));
        round_trip(ControlFrame::Answer(Answer {
            node: "b".into(),
            id: 8,
            answer: AnswerKind::Rooms {
                rooms: HashMap::from([("r".into(), 3), (String::new(), 1)]),
            },
        }));
        round_trip(ControlFrame::Answer(Answer {
            node: "b".into(),
            id: 7,
            answer: AnswerKind::MemberCount { count: 0 },
        }));
    }

    #[test]
    fn the_documented_forms_parse() {
        let query = br#"{"v":1,"type":"query","node":"a","id":1,"query":{"kind":"member_count","room":"r"}}"#;
        assert!(matches!(
            ControlFrame::decode(query),
            Ok(ControlFrame::Query(Query { id: 1, .. }))
        ));
        let answer =
            br#"{"v":1,"type":"answer","node":"b","id":1,"answer":{"kind":"rooms","rooms":{"r":2}},"extra":true}"#;
        assert!(matches!(
            ControlFrame::decode(answer),
            Ok(ControlFrame::Answer(Answer { id: 1, .. }))
        ));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"not json", "text"),
            (br#"{"type":"leave","node":"a"}"#, "no version"),
            (br#"{"v":1,"type":"gossip","node":"a"}"#, "unknown type"),
            (br#"{"v":1,"type":"leave"}"#, "no node"),
            (
                br#"{"v":1,"type":"heartbeat","node":"a"}"#,
                "missing fields",
            ),
            (
                br#"{"v":1,"type":"query","node":"a","id":-1,"query":{"kind":"rooms"}}"#,
                "negative id",
            ),
            (
                br#"{"v":1,"type":"query","node":"a","id":1,"query":{"kind":"sockets"}}"#,
                "unknown kind",
            ),
        ];
        for (bytes, what) in cases {
            assert!(
                matches!(ControlFrame::decode(bytes), Err(FrameError::Malformed(_))),
                "{what}: {:?}",
                ControlFrame::decode(bytes)
            );
        }
        assert_eq!(
            ControlFrame::decode(br#"{"v":2,"type":"leave","node":"a"}"#),
            Err(FrameError::Version(2))
        );
        assert_eq!(
            ControlFrame::decode(br#"{"v":1,"type":"leave","node":""}"#),
            Err(FrameError::NoNode)
        );
    }
}
