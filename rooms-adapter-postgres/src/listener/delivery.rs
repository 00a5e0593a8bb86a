//! What arrives on the listening connection: notifications are framed
//! (inline, or an attachment to read first), handed over in arrival order,
//! decoded and sent to the sink.

use std::sync::Arc;

use rooms_adapter::RoomName;
use rooms_adapter::adapter::AdapterEvent;
use rooms_adapter::wire::{self, Codec, DecodeError};
use tokio_postgres::{AsyncMessage, Notification};

use super::Listener;
use crate::error::PostgresError;
use crate::frame::{self, Frame};
use crate::publisher::Fetched;

/// Where a notification goes.
enum Target {
    Room(RoomName),
    Control,
}

/// A notification ready to hand over, in arrival order.
pub(super) struct Delivery {
    target: Target,
    payload: Result<Vec<u8>, DecodeError>,
}

impl Listener {
    /// Handles what the connection yields next (`None`: it closed).
    pub(super) fn message(&mut self, message: Option<Result<AsyncMessage, tokio_postgres::Error>>) {
        match message {
            Some(Ok(AsyncMessage::Notification(notification))) => self.notification(&notification),
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(notice = %notice, "postgres notice on the listening connection");
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => self.lost(format!("the listening connection failed: {error}")),
            None => self.lost("the listening connection was closed".to_owned()),
        }
    }

    fn notification(&mut self, notification: &Notification) {
        let channel = notification.channel();
        let target = if self.control.iter().any(|control| control == channel) {
            Target::Control
        } else if let Some(room) = self.table.deliverable(channel) {
            Target::Room(room.clone())
        } else {
            return;
        };
        match frame::parse(notification.payload()) {
            Ok(Frame::Inline(bytes)) => {
                if self.deliveries.is_empty() {
                    self.deliver(target, Ok(&bytes));
                } else {
                    let payload = Ok(bytes.into_owned());
                    self.deliveries
                        .push_back(Box::pin(async move { Delivery { target, payload } }));
                }
            }
            Ok(Frame::Attachment(id)) => {
                let publisher = Arc::clone(&self.publisher);
                let limit = self.config.max_payload_bytes;
                let table = self.config.attachment_table.clone();
                self.deliveries.push_back(Box::pin(async move {
                    let payload = match publisher.fetch(id, limit).await {
                        Ok(Fetched::Payload(bytes)) => Ok(bytes),
                        Ok(Fetched::TooLarge(size)) => Err(DecodeError::TooLarge { size, limit }),
                        Ok(Fetched::Missing) => Err(DecodeError::InvalidField {
                            field: "attachment",
                            reason: format!(
                                "no row {id} in {table} (deleted after the attachment TTL, or \
                                 never stored)"
                            ),
                        }),
                        Err(error) => {
                            tracing::warn!(%error, id, "cannot read an attachment: its message is lost");
                            Err(DecodeError::InvalidField {
                                field: "attachment",
                                reason: format!("row {id} could not be read: {error}"),
                            })
                        }
                    };
                    Delivery { target, payload }
                }));
            }
            Err(error) => {
                let error = match error {
                    PostgresError::InvalidReferenceFrame { .. } => DecodeError::InvalidField {
                        field: "attachment",
                        reason: error.to_string(),
                    },
                    _ => DecodeError::Malformed {
                        codec: Codec::MessagePack,
                        reason: error.to_string(),
                    },
                };
                if self.deliveries.is_empty() {
                    self.deliver(target, Err(error));
                } else {
                    let payload = Err(error);
                    self.deliveries
                        .push_back(Box::pin(async move { Delivery { target, payload } }));
                }
            }
        }
    }

    /// Hands over a notification whose attachment (or turn) has come.
    pub(super) fn delivered(&self, delivery: Delivery) {
        let Delivery { target, payload } = delivery;
        match payload {
            Ok(bytes) => self.deliver(target, Ok(&bytes)),
            Err(error) => self.deliver(target, Err(error)),
        }
    }

    fn deliver(&self, target: Target, payload: Result<&[u8], DecodeError>) {
        match target {
            Target::Control => {
                if let Ok(bytes) = payload {
                    self.sink.send(AdapterEvent::Control {
                        payload: bytes::Bytes::copy_from_slice(bytes),
                    });
                }
            }
            Target::Room(room) => {
                if !self.table.is_wanted(&room) {
                    return;
                }
                let decoded =
                    payload.and_then(|bytes| wire::decode(bytes, self.config.max_payload_bytes));
                match decoded {
                    Ok(envelope) => {
                        self.shared.counters.record_received();
                        self.sink.send(AdapterEvent::Message { room, envelope });
                    }
                    Err(error) => self
                        .shared
                        .counters
                        .record_decode_error(room.as_str(), &error),
                }
            }
        }
    }
}
