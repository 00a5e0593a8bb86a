//! `GET /rooms/{room}/events`: a member's SSE stream, resumed from `Last-Event-ID`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use rooms_adapter::sse::axum::{LastEventId, SseResponse};
use rooms_adapter::{ConnectOptions, Resume, RoomName, SseMessage};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::state::{AppCounters, AppState};
use crate::validation;

/// How long a browser waits before reconnecting a dropped stream.
pub(super) const RETRY: Duration = Duration::from_secs(2);

/// The room from the path, validated.
pub(super) fn room_from(path: Result<Path<String>, PathRejection>) -> Result<RoomName, ApiError> {
    let Path(room) = path.map_err(|rejection| {
        ApiError::field(StatusCode::BAD_REQUEST, "room", rejection.body_text())
    })?;
    validation::room(&room)?;
    Ok(RoomName::from(room))
}

/// `?lastEventId=` on the events URL: a page that reloads (a new
/// `EventSource`, which sends no `Last-Event-ID`) resumes from the id it saw
/// last.
#[derive(Debug, Deserialize)]
pub(super) struct ResumeQuery {
    #[serde(rename = "lastEventId")]
    pub(super) last_event_id: Option<String>,
}

/// `GET /rooms/{room}/events`: joins the room (replaying what a returning
/// client missed, from history) and streams it.
pub(super) async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    LastEventId(header_id): LastEventId,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let room = room_from(path)?;
    let Query(query) = query.map_err(|rejection| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "lastEventId",
            rejection.body_text(),
        )
    })?;
    let last_event_id = header_id.or(query.last_event_id);
    if let Some(id) = &last_event_id
        && id.len() > rooms_adapter::message::MAX_ID_BYTES
    {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "lastEventId",
            format!(
                "Last-Event-ID must be at most {} bytes",
                rooms_adapter::message::MAX_ID_BYTES
            ),
        ));
    }
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
    let receiver = rooms.connect(ConnectOptions::new()).await?;
    let connection = receiver.id().clone();
    // With history, what the client missed since Last-Event-ID is queued
    // first (or one `event: gap` when history cannot cover it).
    let resume = match rooms
        .join_from(&connection, room.clone(), last_event_id.as_deref())
        .await
    {
        Ok(resume) => resume,
        Err(error) if error.is_retryable() => {
            // Local delivery works; the adapter subscribes once the medium is back.
            tracing::warn!(%room, %connection, %error, "joined locally; the medium is unavailable");
            Resume::Live
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(%room, %connection, last_event_id = last_event_id.as_deref(), ?resume, "client joined");

    let resume = match resume {
        Resume::Replayed { messages } => json!({"kind": "replayed", "messages": messages}),
        Resume::Gap { reason } => json!({"kind": "gap", "reason": reason.name()}),
        _ => json!({"kind": "live"}),
    };
    let ready = SseMessage::new(json!({
        "room": room.as_str(),
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "connection": connection.as_str(),
        "lastEventId": last_event_id,
        "history": rooms.history_policy().is_some(),
        "resume": resume,
    }))
    .with_event("ready");
    let response = SseResponse::new(receiver)
        .keep_alive(state.keep_alive)
        .retry(RETRY)
        .initial_message(&ready)?;
    Ok(holding(response.into_response(), slot))
}

/// The response with `slot` released only when its body is dropped (the
/// stream ended or the client went away).
pub(super) fn holding(response: Response, slot: OwnedSemaphorePermit) -> Response {
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}
