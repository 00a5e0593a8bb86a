//! The body of an SSE response: a connection's deliveries framed, coalesced and
//! interleaved with keep-alive comments.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::{COALESCE_BYTES, MAX_KEEP_ALIVE};
use crate::connection::{ConnectionReceiver, Delivery};

/// The body of an [`SseResponse`](super::SseResponse): a stream of SSE frames and keep-alive
/// comments that ends when the connection is ended on the server side.
pub struct SseStream {
    pub(super) receiver: ConnectionReceiver,
    pub(super) prelude: VecDeque<Bytes>,
    pub(super) keep_alive_frame: Bytes,
    pub(super) timer: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl fmt::Debug for SseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseStream")
            .field("connection", self.receiver.id())
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// The connection this stream serves.
    pub fn connection(&self) -> &crate::ConnectionId {
        self.receiver.id()
    }

    pub(super) fn sent_something(&mut self) {
        if let Some((every, sleep)) = &mut self.timer {
            let now = Instant::now();
            sleep
                .as_mut()
                .reset(now.checked_add(*every).unwrap_or(now + MAX_KEEP_ALIVE));
        }
    }
}

impl SseStream {
    /// Joins the frames queued behind `first` (up to [`COALESCE_BYTES`]) into
    /// one chunk, so a burst costs one write instead of one per message.
    pub(super) fn coalesce(&mut self, first: Bytes) -> Bytes {
        if first.len() >= COALESCE_BYTES || self.receiver.queued() == 0 {
            return first;
        }
        let mut chunk = BytesMut::with_capacity(COALESCE_BYTES.min(first.len() * 8));
        chunk.extend_from_slice(&first);
        while chunk.len() < COALESCE_BYTES {
            let Some(next) = self.receiver.try_recv() else {
                break;
            };
            chunk.extend_from_slice(next.sse_frame());
        }
        chunk.freeze()
    }
}

impl Stream for SseStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(frame) = this.prelude.pop_front() {
            this.sent_something();
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.receiver.poll_recv(cx) {
            Poll::Ready(Some(delivery)) => {
                this.sent_something();
                return Poll::Ready(Some(Ok(this.coalesce(frame_of(&delivery)))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some((_, sleep)) = &mut this.timer
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.sent_something();
            return Poll::Ready(Some(Ok(this.keep_alive_frame.clone())));
        }
        Poll::Pending
    }
}

/// The delivery's shared frame: cloning `Bytes` bumps a reference count, it
/// does not copy or re-frame.
pub(super) fn frame_of(delivery: &Arc<Delivery>) -> Bytes {
    delivery.sse_frame().clone()
}
