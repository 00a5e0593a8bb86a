//! [`Nodes`]: what a harness keeps of each node it made, found again from
//! the adapter a conformance case hands to
//! [`Harness::cut_node`](rooms_conformance::Harness::cut_node).

use std::sync::{Arc, Mutex, PoisonError, Weak};

use rooms_adapter::{Error, RoomAdapter};

/// A value per node (e.g. its memory bus handle, or its ACL user), keyed by
/// the node's adapter.
pub struct Nodes<T> {
    nodes: Mutex<Vec<(Weak<dyn RoomAdapter>, T)>>,
}

impl<T> std::fmt::Debug for Nodes<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Nodes").field("count", &count).finish()
    }
}

impl<T> Default for Nodes<T> {
    fn default() -> Self {
        Self {
            nodes: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> Nodes<T> {
    /// Remembers `value` for the node whose adapter is `adapter`.
    pub fn add(&self, adapter: &Arc<dyn RoomAdapter>, value: T) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.retain(|(node, _)| node.strong_count() > 0);
        nodes.push((Arc::downgrade(adapter), value));
    }

    /// The value of the node whose adapter is `adapter`; an error for an
    /// adapter this harness did not make.
    pub fn find(&self, adapter: &Arc<dyn RoomAdapter>) -> Result<T, Error> {
        let wanted = Arc::downgrade(adapter);
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(node, _)| node.ptr_eq(&wanted))
            .map(|(_, value)| value.clone())
            .ok_or_else(|| {
                Error::Config(format!(
                    "adapter {:?} was not made by this harness's new_adapter",
                    adapter.name()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rooms_adapter_memory::MemoryAdapter;

    #[test]
    fn nodes_are_found_by_their_adapter_only() {
        let nodes = Nodes::default();
        let a: Arc<dyn RoomAdapter> = Arc::new(MemoryAdapter::new());
        let b: Arc<dyn RoomAdapter> = Arc::new(MemoryAdapter::new());
        nodes.add(&a, "a");
        assert_eq!(nodes.find(&a).ok(), Some("a"));
        assert!(matches!(nodes.find(&b), Err(Error::Config(m)) if m.contains("new_adapter")));
    }
}
