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

mod messages;
mod queries;
mod stream;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rooms_adapter::MediumStatus;
use serde_json::json;

use crate::error::ApiError;
use crate::metrics;
use crate::state::AppState;
use crate::validation::BODY_MAX_BYTES;
use messages::post_message;
use queries::{list_nodes, list_rooms, room_members};
use stream::events;

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
    use super::queries::ScopeParams;
    use super::*;
    use axum::extract::{Path, Query};
    use rooms_adapter::{Error, RoomName};
    use serde_json::Value;
    use std::sync::Arc;
    use std::time::Duration;

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
