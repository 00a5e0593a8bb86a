//! The message a room broadcast carries: [`SseMessage`], and its body, [`Data`].

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::Error;

/// The longest message id accepted, in bytes. Browsers echo the id back as
/// `Last-Event-ID`, and every node keeps recent ids for deduplication, so an id
/// is a short key, not a payload: a longer one is rejected when broadcast and
/// skipped (and counted) when it arrives from the medium.
pub const MAX_ID_BYTES: usize = 256;

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
/// assert_eq!(message.data.as_json(), r#"{"text":"hi"}"#);
/// assert_eq!(message.data.value()?["text"], "hi");
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SseMessage {
    /// The SSE `event:` field; `None` means the default `message` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The payload, kept as JSON text. A string is sent to SSE clients as its
    /// text; any other value as compact JSON. A TS publisher may leave `data`
    /// out entirely (`undefined`); such a message decodes with `data: null`.
    #[serde(default)]
    pub data: Data,
    /// The SSE `id:` field, which browsers echo back as `Last-Event-ID`. At most
    /// [`MAX_ID_BYTES`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The SSE `retry:` field, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

impl SseMessage {
    /// A message with this `data` and no event name, id or retry.
    ///
    /// `data` is anything that converts into [`Data`]: a `&str` or `String`
    /// (sent as text), a number, a `bool`, a [`serde_json::Value`], or [`Data`]
    /// itself (see [`Data::from_serialize`] for any `Serialize` type and
    /// [`Data::from_json`] for text that is already JSON).
    pub fn new(data: impl Into<Data>) -> Self {
        Self {
            event: None,
            data: data.into(),
            id: None,
            retry: None,
        }
    }

    /// A message whose data is `value` serialised as JSON.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Order { id: u32, status: &'static str }
    ///
    /// let message = rooms_adapter::SseMessage::json(&Order { id: 7, status: "shipped" })?;
    /// assert_eq!(message.data.as_json(), r#"{"id":7,"status":"shipped"}"#);
    /// # Ok::<(), rooms_adapter::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Data::from_serialize(value).map(Self::new)
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

/// The body of an [`SseMessage`]: one JSON value, carried as the JSON text it
/// was built from or arrived as.
///
/// A message that crosses the medium is framed for SSE clients straight from
/// this text: no `serde_json::Value` tree is built on the receive path. The
/// text is parsed only when something asks for it ([`value`](Self::value) —
/// e.g. a delivery filter — parses at most once per message and caches the
/// result; [`parse`](Self::parse) deserialises into any type).
///
/// ```
/// use rooms_adapter::message::Data;
/// use serde_json::json;
///
/// // From text, numbers, booleans and `Value`s:
/// assert_eq!(Data::from("[DONE]").as_json(), r#""[DONE]""#);
/// assert_eq!(Data::from(json!({"a": [1, 2]})).as_json(), r#"{"a":[1,2]}"#);
/// // From text that already is JSON (validated, not re-encoded):
/// let data = Data::from_json(r#"{"orderId": 7}"#)?;
/// // Read back typed, or as a `Value`:
/// #[derive(serde::Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct Order { order_id: u32 }
/// assert_eq!(data.parse::<Order>()?.order_id, 7);
/// assert_eq!(data.value()?["orderId"], 7);
/// assert_eq!(Data::from("hi").as_str().as_deref(), Some("hi"));
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
pub struct Data {
    raw: Box<RawValue>,
    parsed: OnceLock<Value>,
}

impl Data {
    /// JSON `null`.
    pub fn null() -> Self {
        Self::from_raw(null_raw())
    }

    /// Data from text that is already JSON. It is checked, and kept as it is
    /// (leading and trailing whitespace trimmed).
    pub fn from_json(json: impl Into<String>) -> Result<Self, Error> {
        RawValue::from_string(json.into())
            .map(Self::from_raw)
            .map_err(invalid)
    }

    /// Data from any `Serialize` value, serialised once as JSON.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::value::to_raw_value(value)
            .map(Self::from_raw)
            .map_err(invalid)
    }

    /// Data from a serde_json raw value.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self {
            raw,
            parsed: OnceLock::new(),
        }
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.raw.get()
    }

    /// The raw value.
    pub fn as_raw(&self) -> &RawValue {
        &self.raw
    }

    /// The value as a `serde_json::Value`, parsed on the first call and then
    /// cached: a message is parsed at most once, however many connections or
    /// filters look at it.
    pub fn value(&self) -> Result<&Value, Error> {
        if let Some(value) = self.parsed.get() {
            return Ok(value);
        }
        let value: Value = serde_json::from_str(self.raw.get()).map_err(invalid)?;
        Ok(self.parsed.get_or_init(|| value))
    }

    /// Deserialises the value into `T` (straight from the text, without a
    /// `Value` in between).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.raw.get()).map_err(invalid)
    }

    /// Whether the value is a JSON string.
    pub fn is_string(&self) -> bool {
        self.raw.get().starts_with('"')
    }

    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.raw.get() == "null"
    }

    /// The text, if the value is a JSON string. Borrowed when the JSON string
    /// has no escapes. `None` for any other value, and for a string that no
    /// Rust `String` can hold (a lone UTF-16 surrogate escape).
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        let json = self.raw.get();
        if !json.starts_with('"') {
            return None;
        }
        if let Ok(text) = serde_json::from_str::<&str>(json) {
            return Some(Cow::Borrowed(text));
        }
        serde_json::from_str::<String>(json).ok().map(Cow::Owned)
    }
}

fn invalid(error: serde_json::Error) -> Error {
    Error::InvalidData {
        reason: error.to_string(),
    }
}

fn null_raw() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

impl Default for Data {
    fn default() -> Self {
        Self::null()
    }
}

impl Clone for Data {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({})", self.raw.get())
    }
}

impl fmt::Display for Data {
    /// The JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

/// Equal when the JSON values are equal (`1.0` and `1.00` are; key order of
/// objects does not matter).
impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
            || matches!((self.value(), other.value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Data {
    fn eq(&self, other: &Value) -> bool {
        self.value().is_ok_and(|value| value == other)
    }
}

impl PartialEq<str> for Data {
    /// True when the value is this JSON string.
    fn eq(&self, other: &str) -> bool {
        self.as_str().is_some_and(|text| text == other)
    }
}

impl PartialEq<&str> for Data {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        let raw = serde_json::value::to_raw_value(&value).unwrap_or_else(|_| null_raw());
        let data = Self::from_raw(raw);
        let _ = data.parsed.set(value);
        data
    }
}

impl From<&Value> for Data {
    fn from(value: &Value) -> Self {
        Self::from(value.clone())
    }
}

impl From<Box<RawValue>> for Data {
    fn from(raw: Box<RawValue>) -> Self {
        Self::from_raw(raw)
    }
}

impl From<Data> for Value {
    /// Parses the text; `null` if it is not valid JSON (it always is when built
    /// through this crate).
    fn from(data: Data) -> Self {
        match data.parsed.into_inner() {
            Some(value) => value,
            None => serde_json::from_str(data.raw.get()).unwrap_or(Value::Null),
        }
    }
}

macro_rules! data_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Data {
            fn from(value: $ty) -> Self {
                // Serialising these to JSON cannot fail (a non-finite float
                // becomes `null`, as `JSON.stringify` does).
                Self::from_raw(serde_json::value::to_raw_value(&value).unwrap_or_else(|_| null_raw()))
            }
        }
    )*};
}

data_from!(
    &str, String, &String, bool, i8, i16, i32, i64, isize, u8, u16, u32, u64, usize
);

impl From<f64> for Data {
    fn from(value: f64) -> Self {
        Self::from(Value::from(value))
    }
}

impl From<f32> for Data {
    fn from(value: f32) -> Self {
        Self::from(Value::from(value))
    }
}

impl From<()> for Data {
    fn from((): ()) -> Self {
        Self::null()
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // serde_json writes the text as it is.
            self.raw.serialize(serializer)
        } else {
            // Binary formats (MessagePack) need the value itself.
            self.value()
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            // serde_json: keep the text as it arrived, without a tree.
            Box::<RawValue>::deserialize(deserializer).map(Self::from_raw)
        } else {
            // MessagePack: convert once into JSON text, without a tree, and
            // without parsing the text again to check it.
            serde_json::value::to_raw_value(&serde_transcode::Transcoder::new(deserializer))
                .map(Self::from_raw)
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions_produce_compact_json() {
        assert_eq!(Data::from("a\"b").as_json(), r#""a\"b""#);
        assert_eq!(Data::from(7).as_json(), "7");
        assert_eq!(Data::from(f64::NAN).as_json(), "null");
        assert_eq!(Data::from(true).as_json(), "true");
        assert_eq!(Data::from(()).as_json(), "null");
        assert_eq!(Data::default().as_json(), "null");
        assert_eq!(
            Data::from(json!({"k": [null]})).as_json(),
            r#"{"k":[null]}"#
        );
    }

    #[test]
    fn from_json_validates_and_trims() {
        assert_eq!(
            Data::from_json(" [1, 2] ")
                .map(|d| d.as_json().to_owned())
                .ok(),
            Some("[1, 2]".to_owned())
        );
        assert!(matches!(
            Data::from_json("{oops"),
            Err(Error::InvalidData { .. })
        ));
        assert!(Data::from_json("").is_err());
    }

    #[test]
    fn equality_is_by_value() {
        let spaced = Data::from_json(r#"{ "b": 1, "a": 2 }"#).expect("json");
        assert_eq!(spaced, Data::from(json!({"a": 2, "b": 1})));
        assert_eq!(spaced, json!({"a": 2, "b": 1}));
        assert_ne!(spaced, Data::from(1));
        assert_eq!(Data::from("hi"), "hi");
        assert_ne!(Data::from(1), "1");
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        assert!(matches!(
            Data::from("plain").as_str(),
            Some(Cow::Borrowed("plain"))
        ));
        assert_eq!(Data::from("a\nb").as_str().as_deref(), Some("a\nb"));
        assert_eq!(Data::from(1).as_str(), None);
        let lone = Data::from_json(r#""a\ud800b""#);
        if let Ok(lone) = lone {
            assert_eq!(lone.as_str(), None);
        }
    }

    #[test]
    fn value_is_parsed_once() {
        let data = Data::from_json(r#"{"x":1}"#).expect("json");
        let first: *const Value = data.value().expect("parses");
        let second: *const Value = data.value().expect("parses");
        assert_eq!(first, second);
    }

    #[test]
    fn message_round_trips_through_both_codecs() {
        let message = SseMessage::new(json!({"a": [1.5, "x", null]})).with_id("1");
        let json = serde_json::to_string(&message).expect("json");
        assert_eq!(json, r#"{"data":{"a":[1.5,"x",null]},"id":"1"}"#);
        assert_eq!(
            serde_json::from_str::<SseMessage>(&json).expect("decodes"),
            message
        );
        let packed = rmp_serde::to_vec_named(&message).expect("msgpack");
        let unpacked: SseMessage = rmp_serde::from_slice(&packed).expect("decodes");
        assert_eq!(unpacked, message);
        assert_eq!(unpacked.data.as_json(), r#"{"a":[1.5,"x",null]}"#);
        let via_value: SseMessage =
            serde_json::from_value(serde_json::to_value(&message).expect("value"))
                .expect("from value");
        assert_eq!(via_value, message);
    }
}
