//! Resident memory per idle connection with one room membership.
//!
//! Run in a fresh process per side: the resident set size (`VmRSS`) is read
//! once the engine is built and the receivers' vector is allocated, then again
//! after `connections` connections have each joined one room (connection `i`
//! joins room `i % rooms`). The difference over the count is the cost of one
//! connection: the engine's registry entries, its queue and the receiver the
//! transport would hold.
//!
//! The baseline is a minimal hand-rolled registry: a map of id to a bounded
//! `tokio::sync::mpsc` sender of the same capacity, a map of room to member
//! ids, and the receivers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use rooms_adapter::engine::DEFAULT_CONNECTION_QUEUE;
use rooms_adapter::{ConnectOptions, ConnectionId, RoomName, Rooms};
use rooms_adapter_memory::MemoryAdapter;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::rss_bytes;

fn result(side: &str, connections: usize, rooms: usize, before: u64, after: u64) -> Value {
    let grown = after.saturating_sub(before);
    json!({
        "side": side,
        "connections": connections,
        "rooms": rooms,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": grown as f64 / connections.max(1) as f64,
    })
}

fn room_name(i: usize, rooms: usize) -> RoomName {
    RoomName::from(format!("room-{}", i % rooms.max(1)))
}

/// The engine's cost per connection.
pub async fn engine(connections: usize, rooms: usize) -> Result<Value> {
    let engine = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await?;
    let names: Vec<RoomName> = (0..rooms).map(|i| room_name(i, rooms)).collect();
    let mut receivers = Vec::with_capacity(connections);
    let before = rss_bytes()?;
    for i in 0..connections {
        let receiver = engine.connect(ConnectOptions::new()).await?;
        engine
            .join(receiver.id(), names[i % names.len().max(1)].clone())
            .await?;
        receivers.push(receiver);
    }
    let after = rss_bytes()?;
    let stats = engine.stats();
    anyhow::ensure!(
        stats.connections == connections as u64,
        "connections missing"
    );
    let mut out = result("engine", connections, rooms, before, after);
    out["engine_rooms"] = json!(stats.rooms);
    drop(receivers);
    engine.shutdown().await;
    Ok(out)
}

/// The minimal hand-rolled registry's cost per connection.
pub async fn naive(connections: usize, rooms: usize) -> Result<Value> {
    let names: Vec<RoomName> = (0..rooms).map(|i| room_name(i, rooms)).collect();
    let mut by_id: HashMap<ConnectionId, mpsc::Sender<Bytes>> = HashMap::new();
    let mut by_room: HashMap<RoomName, HashSet<ConnectionId>> = HashMap::new();
    let mut receivers = Vec::with_capacity(connections);
    let before = rss_bytes()?;
    for i in 0..connections {
        let id = ConnectionId::random();
        let (sender, receiver) = mpsc::channel::<Bytes>(DEFAULT_CONNECTION_QUEUE);
        by_id.insert(id.clone(), sender);
        by_room
            .entry(names[i % names.len().max(1)].clone())
            .or_default()
            .insert(id);
        receivers.push(receiver);
    }
    let after = rss_bytes()?;
    anyhow::ensure!(by_id.len() == connections, "connections missing");
    Ok(result("naive", connections, rooms, before, after))
}
