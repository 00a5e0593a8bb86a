//! The HTTP API and its handlers.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the chat page |
//! | `GET /rooms/{room}/events` | join `room`, stream its messages (SSE) |
//! | `POST /rooms/{room}/messages` | broadcast `{"name", "text"}` to `room` on every node |
//! | `GET /rooms?scope=local\|cluster` | rooms with members on this node (default), or on every live node with how complete the answer is |
//! | `GET /rooms/{room}/members?scope=local\|cluster` | the room's member count on this node (default) or across the cluster |
//! | `GET /nodes` | the live nodes of the cluster, this one first |
//! | `GET /healthz` | liveness |
//! | `GET /readyz` | readiness: 503 while shutting down or while the medium between nodes is down |
//! | `GET /metrics` | engine and adapter counters, Prometheus text format |

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use rooms_adapter::cluster::ClusterAnswer;
use rooms_adapter::sse::axum::{LastEventId, SseResponse};
use rooms_adapter::{ConnectOptions, Error, MediumStatus, Resume, RoomName, SseMessage};
use serde::Deserialize;
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
        .route("/rooms/{room}/members", get(room_members))
        .route("/nodes", get(list_nodes))
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

/// `?lastEventId=` on the events URL: a page that reloads (a new
/// `EventSource`, which sends no `Last-Event-ID`) resumes from the id it saw
/// last.
#[derive(Debug, Deserialize)]
struct ResumeQuery {
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// `GET /rooms/{room}/events`: joins the room (replaying what a returning
/// client missed, from history) and streams it.
async fn events(
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

/// What a query counts: this node's members, or every live node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Local,
    Cluster,
}

/// The query string of the counting endpoints: `?scope=local|cluster`.
#[derive(Debug, Deserialize)]
struct ScopeParams {
    scope: Option<String>,
}

/// The scope asked for (default `local`).
fn scope_from(query: Result<Query<ScopeParams>, QueryRejection>) -> Result<Scope, ApiError> {
    let Query(params) = query.map_err(|rejection| {
        ApiError::field(StatusCode::BAD_REQUEST, "scope", rejection.body_text())
    })?;
    match params.scope.as_deref() {
        None | Some("local") => Ok(Scope::Local),
        Some("cluster") => Ok(Scope::Cluster),
        Some(other) => {
            let shown: String = other.chars().take(32).collect();
            Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "scope",
                format!("scope must be \"local\" or \"cluster\", got {shown:?}"),
            ))
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How complete a cluster answer is: `nodes` (answered, this one included),
/// `known` (live when asked), `complete`, `missing` (ids of the silent
/// nodes) and `elapsedMs`, added to `body`.
fn with_completeness<T>(mut body: Value, answer: &ClusterAnswer<T>) -> Value {
    if let Value::Object(fields) = &mut body {
        fields.insert("nodes".into(), json!(answer.answered));
        fields.insert("known".into(), json!(answer.known));
        fields.insert("complete".into(), json!(answer.is_complete()));
        fields.insert(
            "missing".into(),
            json!(
                answer
                    .missing
                    .iter()
                    .map(|node| node.as_str())
                    .collect::<Vec<_>>()
            ),
        );
        fields.insert("elapsedMs".into(), json!(millis(answer.elapsed)));
    }
    body
}

/// `GET /rooms?scope=local|cluster`: rooms with local members, or with
/// members on any live node (summed, with how complete the answer is).
async fn list_rooms(
    State(state): State<AppState>,
    query: Result<Query<ScopeParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let rooms = &state.rooms;
    if scope_from(query)? == Scope::Cluster {
        let answer = rooms.cluster_rooms().await?;
        let list: Vec<Value> = answer
            .value
            .iter()
            .filter(|(_, members)| **members > 0)
            .map(|(room, members)| json!({"room": room.as_str(), "members": members}))
            .collect();
        let body = json!({
            "node": rooms.node_id().as_str(),
            "backend": rooms.adapter_name(),
            "scope": "cluster",
            "rooms": list,
        });
        return Ok(Json(with_completeness(body, &answer)));
    }
    Ok(Json(local_rooms(&state)))
}

/// The local answer of `GET /rooms`, as it always was.
fn local_rooms(state: &AppState) -> Value {
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
    json!({
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "rooms": list
            .iter()
            .map(|(room, members)| json!({"room": room.as_str(), "members": members}))
            .collect::<Vec<_>>(),
    })
}

/// `GET /rooms/{room}/members?scope=local|cluster`: the room's member count
/// on this node, or on every live node (with how complete the answer is).
async fn room_members(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ScopeParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let room = room_from(path)?;
    let scope = scope_from(query)?;
    let rooms = &state.rooms;
    let body = json!({
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "room": room.as_str(),
    });
    match scope {
        Scope::Local => {
            let mut body = body;
            if let Value::Object(fields) = &mut body {
                fields.insert("scope".into(), json!("local"));
                fields.insert("members".into(), json!(rooms.member_count(&room)));
            }
            Ok(Json(body))
        }
        Scope::Cluster => {
            let answer = rooms.cluster_member_count(room).await?;
            let mut body = body;
            if let Value::Object(fields) = &mut body {
                fields.insert("scope".into(), json!("cluster"));
                fields.insert("members".into(), json!(answer.value));
            }
            Ok(Json(with_completeness(body, &answer)))
        }
    }
}

/// `GET /nodes`: the live nodes, this one first.
async fn list_nodes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rooms = &state.rooms;
    let nodes = rooms.nodes()?;
    let list: Vec<Value> = nodes
        .iter()
        .map(|node| {
            json!({
                "id": node.id.as_str(),
                "self": node.is_self,
                "connections": node.connections,
                "rooms": node.rooms,
                "lastHeardMs": millis(node.last_heard),
                "knownForMs": millis(node.known_for),
            })
        })
        .collect();
    Ok(Json(json!({
        "node": rooms.node_id().as_str(),
        "backend": rooms.adapter_name(),
        "nodes": list,
    })))
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
    let text = metrics::render(&state.metrics);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use rooms_adapter::adapter::{EventSink, RoomAdapter};
    use rooms_adapter::{Envelope, NodeId};

    /// A medium with no optional capability (no control channel).
    struct Plain;

    #[async_trait::async_trait]
    impl RoomAdapter for Plain {
        fn name(&self) -> &str {
            "plain"
        }
        async fn connect(&self, _node: NodeId, _sink: EventSink) -> Result<(), Error> {
            Ok(())
        }
        async fn disconnect(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn subscribe(&self, _room: &RoomName) -> Result<(), Error> {
            Ok(())
        }
        async fn unsubscribe(&self, _room: &RoomName) -> Result<(), Error> {
            Ok(())
        }
        async fn publish(&self, _room: &RoomName, _envelope: &Envelope) -> Result<(), Error> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_backend_without_cluster_queries_answers_501_and_local_still_works() {
        let rooms = rooms_adapter::Rooms::builder(Arc::new(Plain))
            .build()
            .await
            .unwrap();
        let counters = Arc::new(crate::state::AppCounters::default());
        let state = AppState {
            rooms: rooms.clone(),
            keep_alive: Duration::from_secs(15),
            max_connections: 10,
            streams: Arc::new(tokio::sync::Semaphore::new(10)),
            body_timeout: Duration::from_secs(10),
            metrics: Arc::new(crate::metrics::registry(&rooms, &counters)),
            counters,
        };
        let scope = |scope: &str| {
            Ok(Query(ScopeParams {
                scope: Some(scope.to_owned()),
            }))
        };
        let room = || Ok(Path("lobby".to_owned()));
        let unsupported = [
            list_nodes(State(state.clone())).await.unwrap_err(),
            list_rooms(State(state.clone()), scope("cluster"))
                .await
                .unwrap_err(),
            room_members(State(state.clone()), room(), scope("cluster"))
                .await
                .unwrap_err(),
        ];
        for error in unsupported {
            assert_eq!(error.status, StatusCode::NOT_IMPLEMENTED);
            assert!(
                error.message.contains("does not support"),
                "{}",
                error.message
            );
        }
        let Json(local) = list_rooms(State(state.clone()), scope("local"))
            .await
            .unwrap();
        assert_eq!(local["rooms"], json!([]));
        let Json(members) = room_members(State(state.clone()), room(), scope("local"))
            .await
            .unwrap();
        assert_eq!(members["members"], 0);
        let metrics = metrics_text(State(state)).await;
        let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !text.contains("rooms_cluster_nodes"),
            "no gauge without liveness"
        );
        rooms.shutdown().await;
    }

    #[tokio::test]
    async fn unavailable_medium_answers_do_not_name_it() {
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
            Error::Unsupported {
                adapter: "redis".into(),
                capability: "node liveness and cross-node queries",
            },
        ];
        for error in errors {
            let text = error.to_string();
            let unsupported = matches!(error, Error::Unsupported { .. });
            let retryable = error.is_retryable();
            let response = ApiError::from(error).into_response();
            if unsupported {
                assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
            }
            assert!(response.status().is_server_error(), "{text}");
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                retryable,
                "{text}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body = String::from_utf8(body.to_vec()).unwrap();
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert!(answer["error"].is_string(), "{body}");
            for leak in ["10.1.2.3", "6380", "redis"] {
                assert!(!body.contains(leak), "{body:?} leaks {leak:?} of {text}");
            }
        }
    }
}
