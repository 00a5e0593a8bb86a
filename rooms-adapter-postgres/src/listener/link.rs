//! The listening connection: opened within the connect timeout, driven by
//! polling its messages (notifications, notices, its end).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{Stream, StreamExt};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};

use crate::config::PostgresConfig;
use crate::error::PostgresError;
use crate::tls::Connector;

type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// One open listening connection.
pub(crate) struct Link {
    pub(super) client: Arc<Client>,
    messages: Messages,
}

/// Opens a listening connection within the connect timeout.
pub(crate) async fn open(config: &PostgresConfig, medium: &str) -> Result<Link, PostgresError> {
    let mut pg = config.pg.clone();
    pg.connect_timeout(config.connect_timeout);
    let limit = config.connect_timeout + Duration::from_secs(1);
    let connected = match &config.connector {
        Connector::Plain => tokio::time::timeout(limit, connect(&pg, NoTls)).await,
        #[cfg(feature = "tls")]
        Connector::Rustls(tls) => tokio::time::timeout(limit, connect(&pg, tls.clone())).await,
    };
    match connected {
        Ok(Ok(link)) => Ok(link),
        Ok(Err(error)) => Err(PostgresError::from_client(
            medium,
            "open the listening connection",
            error,
        )),
        Err(_) => Err(PostgresError::Timeout {
            operation: format!("connect to {medium}"),
            after: limit,
        }),
    }
}

/// Connects with `tls`; the connection is driven by polling its messages.
async fn connect<T>(pg: &tokio_postgres::Config, tls: T) -> Result<Link, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = pg.connect(tls).await?;
    let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    Ok(Link {
        client: Arc::new(client),
        messages: Box::pin(messages),
    })
}

/// The next message of the connection, or never without one.
pub(super) async fn next_message(
    link: &mut Option<Link>,
) -> Option<Result<AsyncMessage, tokio_postgres::Error>> {
    match link {
        Some(link) => link.messages.next().await,
        None => std::future::pending().await,
    }
}
