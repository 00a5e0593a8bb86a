//! The async-nats connect options of an adapter: timeouts, reconnect
//! backoff, the event callback, credentials and TLS.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::{ConnectOptions, Event};
use rooms_adapter::Error;

use super::NatsAdapter;
use crate::config::{Credentials, NatsConfig};

impl NatsAdapter {
    pub(super) async fn options(
        &self,
        events: tokio::sync::mpsc::Sender<Event>,
    ) -> Result<ConnectOptions, Error> {
        let config = &self.config;
        let (min, max) = (config.backoff_min, config.backoff_max);
        let drops = Arc::clone(&self.shared.slow_consumer_drops);
        let mut options = ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .ping_interval(config.ping_interval)
            .subscription_capacity(config.subscription_capacity)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                NatsConfig::reconnect_delay(min, max, attempts)
            })
            .event_callback(move |event| {
                if let Event::SlowConsumer(_) = event {
                    drops.fetch_add(1, Ordering::Relaxed);
                } else if let Err(error) = events.try_send(event) {
                    tracing::debug!(%error, "nats event queue full; the state check catches up");
                }
                async {}
            });
        if let Some(name) = &config.client_name {
            options = options.name(name);
        }
        options = match &config.credentials {
            // async-nats ignores credentials in URLs: honour the first URL's
            // `user:password@` (or `token@`) here.
            Credentials::None => match url_credentials(&config.servers) {
                Some((user, Some(password))) => options.user_and_password(user, password),
                Some((token, None)) => options.token(token),
                None => options,
            },
            Credentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => options.token(token.clone()),
            #[cfg(feature = "nkeys")]
            Credentials::NKey(seed) => options.nkey(seed.clone()),
            #[cfg(feature = "nkeys")]
            Credentials::CredsFile(path) => {
                options.credentials_file(path).await.map_err(|error| {
                    Error::Config(format!(
                        "credentials: cannot read creds file {}: {error}",
                        path.display()
                    ))
                })?
            }
        };
        let tls = &config.tls;
        if tls.require {
            options = options.require_tls(true);
        }
        if tls.first {
            options = options.tls_first();
        }
        for path in &tls.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }
}

/// The user and password (or the token, without a password) of the first
/// server URL that carries any.
fn url_credentials(servers: &[String]) -> Option<(String, Option<String>)> {
    servers.iter().find_map(|url| {
        let address = url.parse::<async_nats::ServerAddr>().ok()?;
        let user = address.username()?.to_owned();
        Some((user, address.password().map(str::to_owned)))
    })
}
