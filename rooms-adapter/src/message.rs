//! The message a room broadcast carries: [`SseMessage`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One server-sent event, as an application broadcasts it to a room.
///
/// It mirrors the TypeScript `SSEMessage` of `@opinionated-machine/sse-rooms-redis`:
/// `data` is any JSON value (an object, a string such as `"[DONE]"`, a number,
/// `null`, an array); `event`, `id` and `retry` are optional and are left out of the
/// wire format when they are `None`.
///
/// ```
/// use rooms_adapter::SseMessage;
/// use serde_json::json;
///
/// let message = SseMessage::new(json!({"text": "hi"}))
///     .with_event("chat")
///     .with_id("0-000000000001")
///     .with_retry(5_000);
/// assert_eq!(message.event.as_deref(), Some("chat"));
/// assert_eq!(message.data["text"], "hi");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SseMessage {
    /// The SSE `event:` field; `None` means the default `message` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The payload. A string is sent to SSE clients as it is; any other value is
    /// sent as compact JSON. A TS publisher may leave `data` out entirely
    /// (`undefined`); such a message decodes with `data: null`.
    #[serde(default)]
    pub data: Value,
    /// The SSE `id:` field, which browsers echo back as `Last-Event-ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The SSE `retry:` field, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

impl SseMessage {
    /// A message with this `data` and no event name, id or retry.
    pub fn new(data: impl Into<Value>) -> Self {
        Self {
            event: None,
            data: data.into(),
            id: None,
            retry: None,
        }
    }

    /// Sets the event name.
    #[must_use]
    pub fn with_event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// Sets the event id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the reconnection time, in milliseconds.
    #[must_use]
    pub fn with_retry(mut self, retry_ms: u64) -> Self {
        self.retry = Some(retry_ms);
        self
    }
}
