//! A true round trip through the server, for subscribe confirmations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::Client;
use futures_util::StreamExt;
use rooms_adapter::Error;
use tokio::task::AbortHandle;

use crate::error;

/// A true round trip through the server: the client publishes a sequence
/// number on its own inbox subject, which it subscribes, and waits until the
/// number comes back. A server handles one connection's messages in order,
/// so by then it has handled every SUB the client sent before.
/// (`Client::flush` only waits until the bytes are written to the socket.)
pub(super) struct Barrier {
    subject: String,
    next: AtomicU64,
    reached: tokio::sync::watch::Receiver<u64>,
}

impl Barrier {
    /// Subscribes the inbox and starts the task that records what comes back.
    pub(super) async fn start(
        client: &Client,
        medium: &str,
    ) -> Result<(Arc<Barrier>, AbortHandle), Error> {
        let subject = client.new_inbox();
        let mut subscriber = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| error::unavailable(medium, "subscribe to the barrier inbox", e))?;
        let (reached_tx, reached) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let Some(number) = std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                else {
                    continue;
                };
                reached_tx.send_if_modified(|reached| {
                    let newer = number > *reached;
                    if newer {
                        *reached = number;
                    }
                    newer
                });
            }
        })
        .abort_handle();
        let barrier = Barrier {
            subject,
            next: AtomicU64::new(0),
            reached,
        };
        Ok((Arc::new(barrier), task))
    }

    /// One round trip, within `limit`.
    pub(super) async fn round_trip(
        &self,
        client: &Client,
        limit: Duration,
        medium: &str,
        operation: &str,
    ) -> Result<(), Error> {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reached = self.reached.clone();
        let trip = async {
            client
                .publish(self.subject.clone(), number.to_string().into())
                .await
                .map_err(|e| error::unavailable(medium, operation, e))?;
            reached
                .wait_for(|reached| *reached >= number)
                .await
                .map_err(|e| error::unavailable(medium, operation, e))?;
            Ok(())
        };
        match tokio::time::timeout(limit, trip).await {
            Ok(result) => result,
            Err(_) => Err(error::timeout(operation, limit)),
        }
    }
}
