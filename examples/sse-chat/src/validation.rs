//! Validation of everything a client sends: room names, and chat messages
//! (`{"name": string, "text": string}`).
//!
//! Every error names the field at fault, so the API can answer
//! `{"error": "text must not be empty", "field": "text"}`.

use std::fmt;

use serde_json::Value;

/// Longest room name, in characters.
pub const ROOM_MAX_CHARS: usize = 64;
/// Longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 32;
/// Longest message text, in characters.
pub const TEXT_MAX_CHARS: usize = 2000;
/// Largest request body, in bytes.
pub const BODY_MAX_BYTES: usize = 16 * 1024;

/// A rejected input: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The field at fault: `room`, `name`, `text` or `body`.
    pub field: &'static str,
    /// A sentence for the client, starting with the field name.
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

/// A chat message that passed validation: trimmed, line endings normalised to
/// `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInput {
    /// The sender's display name.
    pub name: String,
    /// The message text.
    pub text: String,
}

/// Checks a room name: 1 to 64 characters, no control characters, no
/// leading or trailing whitespace.
pub fn room(raw: &str) -> Result<&str, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::new("room", "room must not be empty"));
    }
    let chars = raw.chars().count();
    if chars > ROOM_MAX_CHARS {
        return Err(ValidationError::new(
            "room",
            format!("room must be at most {ROOM_MAX_CHARS} characters, got {chars}"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "room",
            "room must not contain control characters",
        ));
    }
    if raw.trim() != raw {
        return Err(ValidationError::new(
            "room",
            "room must not start or end with whitespace",
        ));
    }
    Ok(raw)
}

/// Checks a node id given on the command line: 1 to 64 characters, no control
/// characters or whitespace.
pub fn node_id(raw: &str) -> Result<&str, ValidationError> {
    if raw.is_empty() || raw.chars().count() > 64 {
        return Err(ValidationError::new(
            "node-id",
            "node-id must be 1 to 64 characters",
        ));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::new(
            "node-id",
            "node-id must not contain whitespace or control characters",
        ));
    }
    Ok(raw)
}

/// Checks a chat message body: a JSON object with string fields `name`
/// (1 to 32 characters once trimmed, one line) and `text` (1 to 2000
/// characters once trimmed; line breaks and tabs allowed, other control
/// characters not). Other fields are ignored.
pub fn chat_message(body: &Value) -> Result<ChatInput, ValidationError> {
    let Value::Object(object) = body else {
        return Err(ValidationError::new(
            "body",
            format!(
                "body must be a JSON object like {{\"name\": \"ada\", \"text\": \"hello\"}}, got {}",
                kind(body)
            ),
        ));
    };
    let name = string_field(object.get("name"), "name")?.trim();
    if name.is_empty() {
        return Err(ValidationError::new("name", "name must not be empty"));
    }
    let name_chars = name.chars().count();
    if name_chars > NAME_MAX_CHARS {
        return Err(ValidationError::new(
            "name",
            format!("name must be at most {NAME_MAX_CHARS} characters, got {name_chars}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            "name must not contain control characters or line breaks",
        ));
    }

    let text = string_field(object.get("text"), "text")?
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let text = text.trim();
    if text.is_empty() {
        return Err(ValidationError::new("text", "text must not be empty"));
    }
    let text_chars = text.chars().count();
    if text_chars > TEXT_MAX_CHARS {
        return Err(ValidationError::new(
            "text",
            format!("text must be at most {TEXT_MAX_CHARS} characters, got {text_chars}"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ValidationError::new(
            "text",
            "text must not contain control characters (line breaks and tabs are fine)",
        ));
    }
    Ok(ChatInput {
        name: name.to_owned(),
        text: text.to_owned(),
    })
}

fn string_field<'a>(
    value: Option<&'a Value>,
    field: &'static str,
) -> Result<&'a str, ValidationError> {
    match value {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => {
            Err(ValidationError::new(field, format!("{field} is required")))
        }
        Some(other) => Err(ValidationError::new(
            field,
            format!("{field} must be a string, got {}", kind(other)),
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(result: Result<ChatInput, ValidationError>) -> &'static str {
        result.expect_err("should be rejected").field
    }

    #[test]
    fn accepts_ordinary_rooms() {
        for ok in [
            "lobby",
            "a",
            "général",
            "team/rust",
            "ops 2024",
            &"x".repeat(64),
            "🦀",
        ] {
            assert_eq!(room(ok), Ok(ok), "{ok:?}");
        }
    }

    #[test]
    fn rejects_bad_rooms_with_a_reason() {
        let cases = [
            ("", "must not be empty"),
            (&"x".repeat(65), "at most 64 characters, got 65"),
            ("a\nb", "control characters"),
            ("a\u{0}b", "control characters"),
            ("tab\there", "control characters"),
            (" lobby", "whitespace"),
            ("lobby ", "whitespace"),
        ];
        for (bad, reason) in cases {
            let error = room(bad).expect_err(bad);
            assert_eq!(error.field, "room");
            assert!(error.message.contains(reason), "{bad:?}: {}", error.message);
        }
        // 64 characters, not bytes: multi-byte names are measured in characters.
        assert!(room(&"é".repeat(64)).is_ok());
        assert!(room(&"é".repeat(65)).is_err());
    }

    #[test]
    fn accepts_and_normalises_a_message() {
        let input =
            chat_message(&json!({"name": "  Ada ", "text": " hi\r\nthere\rall\t! ", "extra": 1}))
                .expect("valid");
        assert_eq!(
            input,
            ChatInput {
                name: "Ada".into(),
                text: "hi\nthere\nall\t!".into()
            }
        );
        let long = "é".repeat(TEXT_MAX_CHARS);
        assert_eq!(
            chat_message(&json!({"name": "a", "text": long}))
                .expect("valid")
                .text,
            long
        );
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(field_of(chat_message(&json!([1]))), "body");
        assert_eq!(field_of(chat_message(&json!("hi"))), "body");
        assert_eq!(field_of(chat_message(&json!({"text": "hi"}))), "name");
        assert_eq!(
            field_of(chat_message(&json!({"name": null, "text": "hi"}))),
            "name"
        );
        assert_eq!(
            field_of(chat_message(&json!({"name": 7, "text": "hi"}))),
            "name"
        );
        assert_eq!(
            field_of(chat_message(&json!({"name": "   ", "text": "hi"}))),
            "name"
        );
        assert_eq!(
            field_of(chat_message(&json!({"name": "x".repeat(33), "text": "hi"}))),
            "name"
        );
        assert_eq!(
            field_of(chat_message(&json!({"name": "a\nb", "text": "hi"}))),
            "name"
        );
        assert_eq!(field_of(chat_message(&json!({"name": "ada"}))), "text");
        assert_eq!(
            field_of(chat_message(&json!({"name": "ada", "text": ["hi"]}))),
            "text"
        );
        assert_eq!(
            field_of(chat_message(&json!({"name": "ada", "text": " \n\t "}))),
            "text"
        );
        assert_eq!(
            field_of(chat_message(
                &json!({"name": "ada", "text": "x".repeat(2001)})
            )),
            "text"
        );
        assert_eq!(
            field_of(chat_message(&json!({"name": "ada", "text": "bell\u{7}"}))),
            "text"
        );
    }

    #[test]
    fn messages_are_readable() {
        let error = chat_message(&json!({"name": "ada", "text": 5})).expect_err("rejected");
        assert_eq!(error.to_string(), "text must be a string, got a number");
        let error = chat_message(&json!({"name": "ada", "text": "  "})).expect_err("rejected");
        assert_eq!(error.to_string(), "text must not be empty");
        let error =
            chat_message(&json!({"name": "x".repeat(40), "text": "hi"})).expect_err("rejected");
        assert_eq!(
            error.to_string(),
            "name must be at most 32 characters, got 40"
        );
    }

    #[test]
    fn node_ids() {
        assert!(node_id("node-a").is_ok());
        assert!(node_id("").is_err());
        assert!(node_id("a b").is_err());
        assert!(node_id(&"n".repeat(65)).is_err());
    }
}
