//! Rooms, members and nodes, on this node or the whole cluster (`?scope=`).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rooms_adapter::RoomName;
use rooms_adapter::cluster::ClusterAnswer;
use serde::Deserialize;
use serde_json::{Value, json};

use super::stream::room_from;
use crate::error::ApiError;
use crate::state::AppState;

/// What a query counts: this node's members, or every live node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Local,
    Cluster,
}

/// The query string of the counting endpoints: `?scope=local|cluster`.
#[derive(Debug, Deserialize)]
pub(super) struct ScopeParams {
    pub(super) scope: Option<String>,
}

/// The scope asked for (default `local`).
pub(super) fn scope_from(
    query: Result<Query<ScopeParams>, QueryRejection>,
) -> Result<Scope, ApiError> {
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

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How complete a cluster answer is: `nodes` (answered, this one included),
/// `known` (live when asked), `complete`, `missing` (ids of the silent
/// nodes) and `elapsedMs`, added to `body`.
pub(super) fn with_completeness<T>(mut body: Value, answer: &ClusterAnswer<T>) -> Value {
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
pub(super) async fn list_rooms(
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
pub(super) fn local_rooms(state: &AppState) -> Value {
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
pub(super) async fn room_members(
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
pub(super) async fn list_nodes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
