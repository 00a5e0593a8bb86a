//! `POST /rooms/{room}/messages`: a chat message, checked, then broadcast.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rooms_adapter::{Error, SseMessage};
use serde_json::{Value, json};

use super::stream::room_from;
use crate::error::ApiError;
use crate::state::{AppCounters, AppState};
use crate::validation::{self, BODY_MAX_BYTES};

/// `POST /rooms/{room}/messages`: validates and broadcasts one chat message.
pub(super) async fn post_message(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    match accept_message(&state, path, request).await {
        Ok(response) => response,
        Err(error) => {
            if error.status.is_client_error() {
                AppCounters::bump(&state.counters.messages_rejected);
            }
            let timed_out = error.status == StatusCode::REQUEST_TIMEOUT;
            let mut response = error.into_response();
            if timed_out {
                // The rest of the body may never come: do not wait for it.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

pub(super) async fn accept_message(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let room = room_from(path)?;
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::field(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
            "Content-Type must be application/json",
        ));
    }
    // The whole body within the body timeout, however it trickles in.
    let body = tokio::time::timeout(state.body_timeout, Bytes::from_request(request, state))
        .await
        .map_err(|_elapsed| {
            AppCounters::bump(&state.counters.body_timeouts);
            ApiError::field(
                StatusCode::REQUEST_TIMEOUT,
                "body",
                format!(
                    "body not received within {} ms",
                    state.body_timeout.as_millis()
                ),
            )
        })?;
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("body must be at most {BODY_MAX_BYTES} bytes")
        } else {
            format!("cannot read body: {}", rejection.body_text())
        };
        ApiError::field(status, "body", message)
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("body is not valid JSON: {error}"),
        )
    })?;
    let input = validation::chat_message(&value)?;

    let sent_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let message = SseMessage::new(json!({
        "name": input.name,
        "text": input.text,
        "room": room.as_str(),
        "node": state.rooms.node_id().as_str(),
        "sentAt": sent_at,
    }));
    // With history, the medium gives the message its position as id (which
    // a reconnecting client resumes from); without, a random id lets clients
    // drop duplicates.
    let message = match state.rooms.history_policy() {
        Some(_) => message,
        None => message.with_id(uuid::Uuid::new_v4().to_string()),
    };
    let id = message.id.clone();

    match state.rooms.to(room.clone()).send(message).await {
        Ok(report) => {
            AppCounters::bump(&state.counters.messages_posted);
            let id = report.id.clone().or(id);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "room": room.as_str(), "delivered": report.delivered})),
            )
                .into_response())
        }
        Err(error @ Error::Closed { .. }) => Err(error.into()),
        Err(error) => {
            // Local members already have it; other nodes may not.
            AppCounters::bump(&state.counters.publish_failures);
            tracing::warn!(%room, %error, "publish to other nodes failed");
            // The error names the medium: logged above, not answered.
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "delivered on this node only; other nodes were not reached",
            ))
        }
    }
}
