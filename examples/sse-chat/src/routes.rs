//! The HTTP API and its handlers.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the chat page |
//! | `GET /rooms/{room}/events` | join `room`, stream its messages (SSE) |
//! | `POST /rooms/{room}/messages` | broadcast `{"name", "text"}` to `room` on every node |
//! | `GET /rooms` | rooms with local members, and their member counts |
//! | `GET /healthz` | liveness |
//! | `GET /readyz` | readiness: 503 while shutting down or while the medium between nodes is down |
//! | `GET /metrics` | engine and adapter counters, Prometheus text format |

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use rooms_adapter::sse::axum::{LastEventId, SseResponse};
use rooms_adapter::{BroadcastOptions, ConnectOptions, Error, MediumStatus, RoomName, SseMessage};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::metrics;
use crate::state::{AppCounters, AppState};
use crate::validation::{self, BODY_MAX_BYTES};

/// How long a browser waits before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_secs(2);

const INDEX_HTML: &str = include_str!("../static/index.html");

/// The application's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/rooms", get(list_rooms))
        .route("/rooms/{room}/events", get(events))
        .route(
            "/rooms/{room}/messages",
            post(post_message).layer(DefaultBodyLimit::max(BODY_MAX_BYTES)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}

async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML)).into_response()
}

/// The room from the path, validated.
fn room_from(path: Result<Path<String>, PathRejection>) -> Result<RoomName, ApiError> {
    let Path(room) = path.map_err(|rejection| {
        ApiError::field(StatusCode::BAD_REQUEST, "room", rejection.body_text())
    })?;
    validation::room(&room)?;
    Ok(RoomName::from(room))
}

/// Maps an engine error to an answer. The answer never carries the error's
/// text, which can name the medium (`redis at host:port`) or other internals:
/// the details are logged here instead.
fn engine_error(error: &Error) -> ApiError {
    match error {
        Error::Closed { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
        other if other.is_retryable() => {
            tracing::warn!(error = %other, "answering 503: the medium is unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unavailable; try again later",
            )
        }
        other => {
            tracing::error!(error = %other, "answering 500");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// `GET /rooms/{room}/events`: joins the room and streams it.
async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    LastEventId(last_event_id): LastEventId,
) -> Result<Response, ApiError> {
    let room = room_from(path)?;
    let rooms = &state.rooms;
    // Taken before connecting, held by the response body until the stream
    // ends: concurrent requests cannot overshoot the cap.
    let Ok(slot) = Arc::clone(&state.streams).try_acquire_owned() else {
        AppCounters::bump(&state.counters.connections_refused);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this node is full ({} connections); try again later",
                state.max_connections
            ),
        ));
    };
    let receiver = rooms
        .connect(ConnectOptions::new())
        .await
        .map_err(|error| engine_error(&error))?;
    let connection = receiver.id().clone();
    if let Err(error) = rooms.join(&connection, room.clone()).await {
        if error.is_retryable() {
            // Local delivery works; the adapter subscribes once the medium is back.
            tracing::warn!(%room, %connection, %error, "joined locally; the medium is unavailable");
        } else {
            return Err(engine_error(&error));
        }
    }
    tracing::info!(%room, %connection, last_event_id = last_event_id.as_deref(), "client joined");

    // The application decides what Last-Event-ID means. This chat keeps no
    // history, so it tells a returning client that it may have missed messages.
    let ready = SseMessage::new(json!({
        "room": room.as_str(),
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "connection": connection.as_str(),
        "lastEventId": last_event_id,
    }))
    .with_event("ready");
    let response = SseResponse::new(receiver)
        .keep_alive(state.keep_alive)
        .retry(RETRY)
        .initial_message(&ready)
        .map_err(|error| engine_error(&error))?;
    Ok(holding(response.into_response(), slot))
}

/// The response with `slot` released only when its body is dropped (the
/// stream ended or the client went away).
fn holding(response: Response, slot: OwnedSemaphorePermit) -> Response {
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// `POST /rooms/{room}/messages`: validates and broadcasts one chat message.
async fn post_message(
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

async fn accept_message(
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

    let id = uuid::Uuid::new_v4().to_string();
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
    }))
    .with_id(id.clone());

    match state
        .rooms
        .broadcast(room.clone(), message, BroadcastOptions::new())
        .await
    {
        Ok(report) => {
            AppCounters::bump(&state.counters.messages_posted);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "room": room.as_str(), "delivered": report.delivered})),
            )
                .into_response())
        }
        Err(error @ Error::Closed { .. }) => Err(engine_error(&error)),
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

/// `GET /rooms`: rooms with local members.
async fn list_rooms(State(state): State<AppState>) -> Json<Value> {
    let rooms = &state.rooms;
    let mut list: Vec<(RoomName, usize)> = rooms
        .rooms()
        .into_iter()
        .map(|room| {
            let members = rooms.member_count(&room);
            (room, members)
        })
        .filter(|(_, members)| *members > 0)
        .collect();
    list.sort();
    Json(json!({
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "rooms": list
            .iter()
            .map(|(room, members)| json!({"room": room.as_str(), "members": members}))
            .collect::<Vec<_>>(),
    }))
}

/// `GET /healthz`.
async fn healthz(State(state): State<AppState>) -> Response {
    let rooms = &state.rooms;
    let status = if rooms.is_closed() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if rooms.is_closed() { "shutting down" } else { "ok" },
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
    });
    (status, Json(body)).into_response()
}

/// `GET /readyz`: 200 while this node can serve its rooms across nodes; 503
/// while it shuts down or the medium is down (a load balancer then sends new
/// clients elsewhere; connected ones keep their local rooms).
async fn readyz(State(state): State<AppState>) -> Response {
    let rooms = &state.rooms;
    let medium = rooms.medium_status();
    let (status, text, down_ms) = match &medium {
        _ if rooms.is_closed() => (StatusCode::SERVICE_UNAVAILABLE, "shutting down", None),
        MediumStatus::Down { since, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "medium down",
            Some(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)),
        ),
        _ => (StatusCode::OK, "ready", None),
    };
    let body = json!({
        "status": text,
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "mediumDownMs": down_ms,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let rooms = &state.rooms;
    let text = metrics::render(&metrics::Snapshot {
        node: rooms.node_id().as_str(),
        backend: rooms.adapter_name(),
        engine: rooms.stats(),
        adapter: rooms.adapter_stats(),
        app: &state.counters,
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_medium_answers_do_not_name_it() {
        let errors = [
            Error::Unavailable {
                medium: "redis at 10.1.2.3:6380".into(),
                reason: "connection refused (redis://10.1.2.3:6380)".into(),
                source: None,
            },
            Error::Timeout {
                operation: "publish to redis at 10.1.2.3:6380".into(),
                after: Duration::from_secs(2),
            },
            Error::Backend {
                context: "publish to redis at 10.1.2.3:6380".into(),
                retryable: true,
                source: "Connection refused (os error 111) 10.1.2.3:6380".into(),
            },
            Error::Backend {
                context: "subscribe on redis at 10.1.2.3:6380".into(),
                retryable: false,
                source: "NOAUTH 10.1.2.3:6380".into(),
            },
            Error::Config("redis://10.1.2.3:6380".into()),
        ];
        for error in errors {
            let answer = engine_error(&error);
            assert!(answer.status.is_server_error(), "{error}");
            for leak in ["10.1.2.3", "6380", "redis"] {
                assert!(
                    !answer.message.contains(leak),
                    "{:?} leaks {leak:?} of {error}",
                    answer.message
                );
            }
        }
    }
}
