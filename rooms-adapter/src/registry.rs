//! The room registry: connection -> rooms and room -> connections, on one node.
//!
//! Pure bookkeeping with no I/O; the engine keeps it behind a lock that is never
//! held across an `.await`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::connection::ConnectionEntry;
use crate::error::Error;
use crate::ids::{ConnectionId, RoomName};

#[derive(Debug)]
struct ConnectionState {
    entry: Arc<ConnectionEntry>,
    rooms: HashSet<RoomName>,
}

/// What a join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Joined {
    /// The connection was not in the room before.
    pub(crate) newly_joined: bool,
}

/// What a leave changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Left {
    /// The connection was in the room.
    pub(crate) was_member: bool,
    /// The room has no local member any more.
    pub(crate) room_now_empty: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    connections: HashMap<ConnectionId, ConnectionState>,
    rooms: HashMap<RoomName, HashMap<ConnectionId, Arc<ConnectionEntry>>>,
}

impl Registry {
    pub(crate) fn add_connection(&mut self, entry: Arc<ConnectionEntry>) -> Result<(), Error> {
        match self.connections.entry(entry.id.clone()) {
            Entry::Occupied(_) => Err(Error::ConnectionExists(entry.id.clone())),
            Entry::Vacant(slot) => {
                slot.insert(ConnectionState {
                    entry,
                    rooms: HashSet::new(),
                });
                Ok(())
            }
        }
    }

    /// Removes a connection from every room; returns its entry and the rooms
    /// that became empty.
    pub(crate) fn remove_connection(
        &mut self,
        id: &ConnectionId,
    ) -> Option<(Arc<ConnectionEntry>, Vec<RoomName>)> {
        let state = self.connections.remove(id)?;
        let mut emptied = Vec::new();
        for room in state.rooms {
            if let Some(members) = self.rooms.get_mut(&room) {
                members.remove(id);
                if members.is_empty() {
                    self.rooms.remove(&room);
                    emptied.push(room);
                }
            }
        }
        Some((state.entry, emptied))
    }

    pub(crate) fn join(&mut self, id: &ConnectionId, room: &RoomName) -> Result<Joined, Error> {
        let state = self
            .connections
            .get_mut(id)
            .ok_or_else(|| Error::UnknownConnection(id.clone()))?;
        let newly_joined = state.rooms.insert(room.clone());
        if newly_joined {
            self.rooms
                .entry(room.clone())
                .or_default()
                .insert(id.clone(), state.entry.clone());
        }
        Ok(Joined { newly_joined })
    }

    pub(crate) fn leave(&mut self, id: &ConnectionId, room: &RoomName) -> Result<Left, Error> {
        let state = self
            .connections
            .get_mut(id)
            .ok_or_else(|| Error::UnknownConnection(id.clone()))?;
        let was_member = state.rooms.remove(room);
        let mut room_now_empty = false;
        if was_member && let Some(members) = self.rooms.get_mut(room) {
            members.remove(id);
            if members.is_empty() {
                self.rooms.remove(room);
                room_now_empty = true;
            }
        }
        Ok(Left {
            was_member,
            room_now_empty,
        })
    }

    pub(crate) fn has_members(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    pub(crate) fn contains_connection(&self, id: &ConnectionId) -> bool {
        self.connections.contains_key(id)
    }

    pub(crate) fn rooms_of(&self, id: &ConnectionId) -> Option<Vec<RoomName>> {
        self.connections
            .get(id)
            .map(|state| state.rooms.iter().cloned().collect())
    }

    pub(crate) fn members_of(&self, room: &RoomName) -> Vec<ConnectionId> {
        self.rooms
            .get(room)
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn member_count(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, HashMap::len)
    }

    pub(crate) fn is_in_room(&self, id: &ConnectionId, room: &RoomName) -> bool {
        self.connections
            .get(id)
            .is_some_and(|state| state.rooms.contains(room))
    }

    pub(crate) fn all_rooms(&self) -> Vec<RoomName> {
        self.rooms.keys().cloned().collect()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub(crate) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The members of `rooms`, each once, without `except`.
    pub(crate) fn recipients(
        &self,
        rooms: &[RoomName],
        except: Option<&ConnectionId>,
    ) -> Vec<Arc<ConnectionEntry>> {
        let keep = |id: &ConnectionId| except != Some(id);
        match rooms {
            [] => Vec::new(),
            [room] => self
                .rooms
                .get(room)
                .map(|members| {
                    members
                        .iter()
                        .filter(|(id, _)| keep(id))
                        .map(|(_, entry)| entry.clone())
                        .collect()
                })
                .unwrap_or_default(),
            many => {
                let mut seen = HashSet::new();
                many.iter()
                    .filter_map(|room| self.rooms.get(room))
                    .flat_map(|members| members.iter())
                    .filter(|(id, _)| keep(id) && seen.insert(*id))
                    .map(|(_, entry)| entry.clone())
                    .collect()
            }
        }
    }

    /// Empties the registry, returning every connection.
    pub(crate) fn drain(&mut self) -> Vec<Arc<ConnectionEntry>> {
        self.rooms.clear();
        self.connections
            .drain()
            .map(|(_, state)| state.entry)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn entry(id: &str) -> Arc<ConnectionEntry> {
        let (sender, _receiver) = mpsc::channel(1);
        Arc::new(ConnectionEntry::new(id.into(), sender, None, 0))
    }

    #[test]
    fn tracks_both_directions_and_reports_emptied_rooms() {
        let mut registry = Registry::default();
        registry.add_connection(entry("a")).expect("add a");
        registry.add_connection(entry("b")).expect("add b");
        assert!(registry.add_connection(entry("a")).is_err());
        let (a, b, r1, r2) = (
            ConnectionId::from("a"),
            ConnectionId::from("b"),
            RoomName::from("r1"),
            RoomName::from("r2"),
        );
        assert!(registry.join(&a, &r1).expect("join").newly_joined);
        assert!(!registry.join(&a, &r1).expect("join").newly_joined);
        registry.join(&a, &r2).expect("join");
        registry.join(&b, &r1).expect("join");
        assert_eq!(registry.member_count(&r1), 2);
        assert!(registry.is_in_room(&a, &r2));
        assert_eq!(
            registry.recipients(&[r1.clone(), r2.clone()], None).len(),
            2
        );
        assert_eq!(
            registry
                .recipients(std::slice::from_ref(&r1), Some(&a))
                .len(),
            1
        );

        let left = registry.leave(&b, &r1).expect("leave");
        assert_eq!(
            left,
            Left {
                was_member: true,
                room_now_empty: false
            }
        );
        let (_, mut emptied) = registry.remove_connection(&a).expect("present");
        emptied.sort();
        assert_eq!(emptied, vec![r1.clone(), r2.clone()]);
        assert!(!registry.has_members(&r1));
        assert!(registry.join(&a, &r1).is_err());
    }
}
