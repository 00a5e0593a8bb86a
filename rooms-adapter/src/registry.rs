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
            if state.rooms.len() == 2 {
                state.entry.set_multi_room(true);
            }
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
        if was_member && state.rooms.len() == 1 {
            state.entry.set_multi_room(false);
        }
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

    pub(crate) fn connection(&self, id: &ConnectionId) -> Option<&Arc<ConnectionEntry>> {
        self.connections.get(id).map(|state| &state.entry)
    }

    pub(crate) fn rooms_of(&self, id: &ConnectionId) -> Option<Vec<RoomName>> {
        self.connections
            .get(id)
            .map(|state| state.rooms.iter().cloned().collect())
    }

    pub(crate) fn members_of(&self, room: &str) -> Vec<ConnectionId> {
        self.rooms
            .get(room)
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn member_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, HashMap::len)
    }

    pub(crate) fn is_in_room(&self, id: &ConnectionId, room: &str) -> bool {
        self.connections
            .get(id)
            .is_some_and(|state| state.rooms.contains(room))
    }

    pub(crate) fn all_rooms(&self) -> Vec<RoomName> {
        self.rooms.keys().cloned().collect()
    }

    /// The entries of a room's local members.
    pub(crate) fn member_entries(&self, room: &RoomName) -> Vec<Arc<ConnectionEntry>> {
        self.rooms
            .get(room)
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every room with its number of local members.
    pub(crate) fn room_counts(&self) -> Vec<(RoomName, usize)> {
        self.rooms
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub(crate) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Calls `visit` for each member of `rooms`, once per connection, without
    /// `except`; no list is built for the common one-room case.
    pub(crate) fn for_each_recipient(
        &self,
        rooms: &[RoomName],
        except: Option<&ConnectionId>,
        mut visit: impl FnMut(&Arc<ConnectionEntry>, &RoomName),
    ) {
        let keep = |id: &ConnectionId| except != Some(id);
        match rooms {
            [] => {}
            [room] => {
                if let Some(recipients) = self.recipients_of(room, except) {
                    recipients.for_each(|entry| visit(entry, room));
                }
            }
            many => {
                let mut seen = HashSet::new();
                for room in many {
                    let Some(members) = self.rooms.get(room) else {
                        continue;
                    };
                    for (id, entry) in members {
                        if keep(id) && seen.insert(id) {
                            visit(entry, room);
                        }
                    }
                }
            }
        }
    }

    /// The members of `room` when one of them other than `except` exists:
    /// the check and the delivery of a one-room broadcast with one lookup.
    pub(crate) fn recipients_of<'a>(
        &'a self,
        room: &RoomName,
        except: Option<&'a ConnectionId>,
    ) -> Option<Recipients<'a>> {
        let members = self.rooms.get(room)?;
        members
            .keys()
            .any(|id| except != Some(id))
            .then_some(Recipients { members, except })
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

/// One room's recipients, from [`Registry::recipients_of`].
pub(crate) struct Recipients<'a> {
    members: &'a HashMap<ConnectionId, Arc<ConnectionEntry>>,
    except: Option<&'a ConnectionId>,
}

impl Recipients<'_> {
    /// Visits every member but the excepted one.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&Arc<ConnectionEntry>)) {
        for (id, entry) in self.members {
            if self.except != Some(id) {
                visit(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn entry(id: &str) -> Arc<ConnectionEntry> {
        let (sender, _receiver) = mpsc::unbounded_channel();
        Arc::new(ConnectionEntry::new(
            id.into(),
            sender,
            None,
            (1, usize::MAX),
            0,
        ))
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
        assert_eq!(registry.member_count(r1.as_str()), 2);
        assert!(registry.is_in_room(&a, r2.as_str()));
        let count = |rooms: &[RoomName], except: Option<&ConnectionId>| {
            let mut n = 0;
            registry.for_each_recipient(rooms, except, |_, _| n += 1);
            n
        };
        assert_eq!(count(&[r1.clone(), r2.clone()], None), 2);
        assert_eq!(count(std::slice::from_ref(&r1), Some(&a)), 1);
        assert!(registry.recipients_of(&r2, None).is_some());
        assert!(registry.recipients_of(&r2, Some(&a)).is_none());

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
