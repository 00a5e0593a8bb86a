//! The engine's subscription changes: one lock per room (taken on demand,
//! dropped when unused), one change in flight per room, and deferral to a
//! background task while the medium is known to be down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{Inner, bump};
use crate::error::Error;
use crate::ids::RoomName;

impl Inner {
    pub(super) fn room_lock(&self, room: &RoomName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .room_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(room.clone()).or_default())
    }

    /// Forgets a room's lock once nobody holds or waits for it.
    pub(super) fn release_room_lock(&self, room: &RoomName, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self
            .room_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Clones are made only under `room_locks`: ours and the map's are the
        // last two.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(room);
        }
    }

    pub(super) fn medium_is_down(&self) -> bool {
        self.medium_down.load(Ordering::Acquire)
    }

    pub(super) fn medium_result<T>(&self, result: &Result<T, Error>) {
        match result {
            Ok(_) => {
                if self.medium_down.load(Ordering::Relaxed) {
                    self.set_medium_up();
                }
            }
            Err(error) if error.is_retryable() => self.set_medium_down(&error.to_string()),
            Err(_) => {}
        }
    }

    /// The medium is unreachable: joins complete locally, the status says so.
    pub(super) fn set_medium_down(&self, reason: &str) {
        self.medium_down.store(true, Ordering::Release);
        let mut lost = self
            .medium_lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if lost.is_none() {
            *lost = Some((std::time::Instant::now(), reason.to_owned()));
        }
    }

    /// The medium is back.
    pub(super) fn set_medium_up(&self) {
        self.medium_down.store(false, Ordering::Release);
        *self
            .medium_lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Brings the adapter's subscription of `room` in line with whether the room
    /// has local members now. Serialised per room (one change in flight per
    /// room; rooms never wait for each other), so joins and leaves that race
    /// settle to the right state.
    pub(super) async fn reconcile(&self, room: &RoomName) -> Result<(), Error> {
        let lock = self.room_lock(room);
        let result = {
            let _guard = lock.lock().await;
            self.reconcile_locked(room).await
        };
        self.release_room_lock(room, lock);
        result
    }

    pub(super) async fn reconcile_locked(&self, room: &RoomName) -> Result<(), Error> {
        let want = self.read().has_members(room);
        let have = self.subscribed().contains(room);
        if want && !have {
            let result = self.adapter.subscribe(room).await;
            self.medium_result(&result);
            match result {
                Ok(()) => {
                    self.subscribed().insert(room.clone());
                }
                Err(error) => {
                    bump(&self.counters.subscription_errors);
                    if error.is_retryable() {
                        // The adapter keeps the room wanted and subscribes it
                        // when the medium is back.
                        self.subscribed().insert(room.clone());
                    }
                    return Err(error);
                }
            }
        } else if !want && have {
            self.subscribed().remove(room);
            let result = self.adapter.unsubscribe(room).await;
            self.medium_result(&result);
            if let Err(error) = result {
                bump(&self.counters.subscription_errors);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Reconciles `room` on a background task, once: a room already queued
    /// or running is not queued again.
    pub(super) fn reconcile_in_background(self: &Arc<Self>, room: RoomName) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self
            .subscribing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(room.clone())
        {
            return;
        }
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            let lock = inner.room_lock(&room);
            let _guard = lock.lock().await;
            // Joins and leaves from now on queue their own change.
            inner
                .subscribing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&room);
            if let Err(error) = inner.reconcile_locked(&room).await {
                tracing::debug!(%room, %error, "background subscription change failed");
            }
            drop(_guard);
            inner.release_room_lock(&room, lock);
        });
    }

    /// Reconciles now, or in the background while the medium is known to be
    /// down (the call would only wait for its timeout).
    pub(super) async fn reconcile_or_defer(self: &Arc<Self>, room: &RoomName) -> Result<(), Error> {
        if self.medium_is_down() {
            bump(&self.counters.deferred_subscriptions);
            self.reconcile_in_background(room.clone());
            Ok(())
        } else {
            self.reconcile(room).await
        }
    }
}
