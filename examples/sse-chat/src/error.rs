//! The API's error answer: a status code and `{"error": "...", "field": "..."}`.
//! Errors of the rooms engine are answered by the library
//! (`rooms_adapter::Error`'s `IntoResponse`: `{"error": "...", "code": "..."}`,
//! with a status per case and nothing that names the medium).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::validation::ValidationError;

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<&'static str>,
    /// The engine's error, answered by the library's `IntoResponse`.
    pub engine: Option<rooms_adapter::Error>,
}

impl ApiError {
    /// An error with no particular field.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            engine: None,
        }
    }

    /// An error about one field.
    pub fn field(status: StatusCode, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: Some(field),
            engine: None,
        }
    }

    /// 404 for an unknown path.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such endpoint")
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        let status = if error.field == "body" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Self::field(status, error.field, error.message)
    }
}

impl From<rooms_adapter::Error> for ApiError {
    fn from(error: rooms_adapter::Error) -> Self {
        Self {
            status: StatusCode::from_u16(error.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: error.public_message().into_owned(),
            field: None,
            engine: Some(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(engine) = self.engine {
            return engine.into_response();
        }
        let body = match self.field {
            Some(field) => json!({"error": self.message, "field": field}),
            None => json!({"error": self.message}),
        };
        (self.status, Json(body)).into_response()
    }
}
