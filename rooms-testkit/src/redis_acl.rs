//! [`NodeUsers`]: one Redis ACL user per node of a harness, so a single node
//! can be cut off the medium while the others keep it
//! ([`Harness::cut_node`](rooms_conformance::Harness::cut_node)): the user is
//! disabled and its connections killed (the node's reconnects then fail
//! authentication), then enabled again. Works the same on a single server,
//! a Sentinel deployment (users on the data nodes and the sentinels) and a
//! Cluster (users on every master).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rooms_adapter::{Error, RoomAdapter};

use crate::nodes::Nodes;
use crate::redis_cluster::cli;

/// Every node user's password.
const PASSWORD: &str = "rooms-node";

/// The node users of one deployment and whether each is enabled.
#[derive(Debug, Default)]
pub struct NodeUsers {
    next: AtomicU64,
    nodes: Nodes<String>,
    /// Every user made, and whether it is enabled (to make them again on a
    /// restarted server, which forgets them).
    users: Mutex<Vec<(String, bool)>>,
}

fn failed(what: String, error: std::io::Error) -> Error {
    Error::Unavailable {
        medium: "test redis".into(),
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

async fn on_every(ports: &[u16], args: &[&str]) -> Result<(), Error> {
    for port in ports {
        cli(*port, args)
            .await
            .map_err(|error| failed(format!("{} on port {port}", args.join(" ")), error))?;
    }
    Ok(())
}

async fn set_user(ports: &[u16], user: &str, enabled: bool) -> Result<(), Error> {
    let password = format!(">{PASSWORD}");
    let state = if enabled { "on" } else { "off" };
    on_every(
        ports,
        &[
            "ACL", "SETUSER", user, state, &password, "~*", "&*", "+@all",
        ],
    )
    .await
}

/// `url` (`redis://host:port...`) with `user` and its password.
pub fn url_with_user(url: &str, user: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{user}:{PASSWORD}@{rest}"),
        None => url.to_owned(),
    }
}

impl NodeUsers {
    /// Makes the next node user, enabled, on the servers at `ports`.
    pub async fn create(&self, ports: &[u16]) -> Result<String, Error> {
        let user = format!("node{}", self.next.fetch_add(1, Ordering::Relaxed));
        set_user(ports, &user, true).await?;
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((user.clone(), true));
        Ok(user)
    }

    /// Remembers that `adapter` connects as `user`.
    pub fn register(&self, adapter: &Arc<dyn RoomAdapter>, user: String) {
        self.nodes.add(adapter, user);
    }

    fn set_enabled(&self, user: &str, enabled: bool) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = users.iter_mut().find(|(name, _)| name == user) {
            entry.1 = enabled;
        }
    }

    /// Disables `adapter`'s user on `ports` and kills its connections there.
    pub async fn cut(&self, adapter: &Arc<dyn RoomAdapter>, ports: &[u16]) -> Result<(), Error> {
        let user = self.nodes.find(adapter)?;
        self.set_enabled(&user, false);
        set_user(ports, &user, false).await?;
        on_every(ports, &["CLIENT", "KILL", "USER", &user]).await
    }

    /// Enables `adapter`'s user again on `ports`.
    pub async fn restore(
        &self,
        adapter: &Arc<dyn RoomAdapter>,
        ports: &[u16],
    ) -> Result<(), Error> {
        let user = self.nodes.find(adapter)?;
        self.set_enabled(&user, true);
        set_user(ports, &user, true).await
    }

    /// `redis-server` arguments that make every user, as it is now, at
    /// start-up (`--user name on|off >password ~* &* +@all` each): a server
    /// restarted with them never refuses a node that is not cut off.
    pub fn server_args(&self) -> Vec<String> {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let mut args = Vec::new();
        for (user, enabled) in users.iter() {
            args.extend([
                "--user".to_owned(),
                user.clone(),
                if *enabled { "on" } else { "off" }.to_owned(),
                format!(">{PASSWORD}"),
                "~*".to_owned(),
                "&*".to_owned(),
                "+@all".to_owned(),
            ]);
        }
        args
    }

    /// Makes every user again, as it was, on servers at `ports` that were
    /// restarted (and forgot them).
    pub async fn recreate(&self, ports: &[u16]) -> Result<(), Error> {
        let users = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (user, enabled) in users {
            set_user(ports, &user, enabled).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_user() {
        assert_eq!(
            url_with_user("redis://127.0.0.1:6379/0", "node1"),
            "redis://node1:rooms-node@127.0.0.1:6379/0"
        );
        assert_eq!(url_with_user("not a url", "node1"), "not a url");
    }
}
