//! What crosses the medium unchanged (every message shape, large payloads,
//! odd room names), and what is skipped and counted (malformed payloads).

use std::sync::{Arc, Mutex};

use rooms_adapter::{RoomName, SseMessage, wire};
use serde_json::Value;

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

use super::opts;

const GOLDEN_VECTORS: &str = include_str!("../../fixtures/ts-v1-vectors.json");

/// Every message shape of the TypeScript golden vectors (each data type,
/// unicode, escapes, id/retry, metadata, odd rooms) crosses unchanged.
pub async fn golden_vector_messages_round_trip<H: Harness>(h: Arc<H>) -> CaseResult {
    let vectors: Vec<Value> = serde_json::from_str(GOLDEN_VECTORS)
        .map_err(|e| CaseError(format!("golden vectors do not parse: {e}")))?;
    let seen: Arc<Mutex<Vec<Option<Value>>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let a = node(&*h).await?;
    let b = node_with(&*h, move |builder| {
        builder.filter(Arc::new(move |_conn, _msg, meta| {
            if let Ok(mut seen) = recorder.lock() {
                seen.push(meta.cloned());
            }
            true
        }))
    })
    .await?;
    for (index, vector) in vectors.iter().enumerate() {
        let payload = vector["payload"].as_str().unwrap_or_default();
        let room = vector["room"].as_str().unwrap_or_default();
        let envelope = wire::decode(payload.as_bytes(), wire::DEFAULT_MAX_PAYLOAD_BYTES)
            .map_err(|e| CaseError(format!("vector {index} does not decode: {e}")))?;
        let mut rx = member(&b, room).await?;
        let mut options = opts();
        if let Some(meta) = envelope.meta() {
            options = options.metadata(meta.clone());
        }
        a.broadcast(room, envelope.message().clone(), options)
            .await?;
        let delivery = next(
            &mut rx,
            &format!("vector {index} ({})", vector["description"]),
        )
        .await?;
        ensure!(
            delivery.message() == envelope.message(),
            "vector {index}: sent {:?}, received {:?}",
            envelope.message(),
            delivery.message()
        );
        let meta = seen.lock().ok().and_then(|mut seen| seen.pop());
        ensure!(
            meta == Some(envelope.meta().cloned()),
            "vector {index}: metadata {:?} arrived as {meta:?}",
            envelope.meta()
        );
        b.disconnect(rx.id()).await?;
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A 1 MiB payload crosses intact.
pub async fn one_mib_payload<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "big").await?;
    let big: String = "0123456789abcdef".repeat(64 * 1024);
    a.broadcast(
        "big",
        SseMessage::new(big.clone()).with_event("big"),
        opts(),
    )
    .await?;
    expect_data(&mut rx, big).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Unicode, empty, punctuation-heavy and long room names all work.
pub async fn odd_room_names<H: Harness>(h: Arc<H>) -> CaseResult {
    let names = crate::support::odd_room_names();
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut receivers = Vec::new();
    for name in &names {
        receivers.push(member(&b, name).await?);
    }
    for name in &names {
        a.broadcast(name.as_str(), SseMessage::new(format!("to {name}")), opts())
            .await?;
    }
    for (name, rx) in names.iter().zip(receivers.iter_mut()) {
        expect_data(rx, format!("to {name}")).await?;
    }
    for rx in &mut receivers {
        expect_quiet(rx).await?;
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Malformed payloads on a room's channel are skipped and counted; good
/// messages around them still arrive.
pub async fn malformed_payloads_are_skipped_and_counted<H: Harness>(h: Arc<H>) -> CaseResult {
    if !h.capabilities().raw_publish {
        return Ok(Outcome::Skipped("needs raw_publish"));
    }
    let b = node(&*h).await?;
    let mut rx = member(&b, "raw").await?;
    let room = RoomName::from("raw");
    let good = |data: &str| format!(r#"{{"v":1,"m":{{"data":"{data}"}},"n":"foreign"}}"#);
    let bad: Vec<Vec<u8>> = vec![
        b"garbage \xff\xfe".to_vec(),
        br#"{"v":2,"m":{"data":1},"n":"x"}"#.to_vec(),
        vec![0x83, 0xa1, b'v', 0x01, 0xa1],
        br#"{"v":1,"n":"x"}"#.to_vec(),
        br#"{"v":1,"m":"not an object","n":"x"}"#.to_vec(),
        b"".to_vec(),
        vec![b' '; wire::DEFAULT_MAX_PAYLOAD_BYTES + 1],
    ];
    h.publish_raw(&room, good("first").as_bytes()).await?;
    for payload in &bad {
        h.publish_raw(&room, payload).await?;
    }
    h.publish_raw(&room, good("last").as_bytes()).await?;
    expect_data(&mut rx, "first").await?;
    expect_data(&mut rx, "last").await?;
    wait_until("every bad payload is counted", DELIVERY_TIMEOUT, || {
        b.adapter_stats().decode_errors_total() == bad.len() as u64
    })
    .await?;
    expect_quiet(&mut rx).await?;
    b.shutdown().await;
    Ok(Outcome::Passed)
}
