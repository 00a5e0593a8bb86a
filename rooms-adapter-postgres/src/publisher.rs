//! The pooled side: publishing (`pg_notify`, attachments), reading
//! attachments, creating the table and deleting old rows.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rooms_adapter::RoomName;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::PostgresConfig;
use crate::error::PostgresError;
use crate::listener::truncated;
use crate::tls::Connector;

mod pipeline;

/// What a receiver found in the attachments table.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The payload.
    Payload(Vec<u8>),
    /// The row is larger than the limit (its size).
    TooLarge(usize),
    /// No such row (expired or never stored).
    Missing,
}

/// The most publishes one worker pipelines on one connection at once.
const MAX_PIPELINE: usize = 256;
/// Publishes waiting for a worker (callers wait for room beyond it).
const JOB_QUEUE: usize = 4096;

/// Where a publish goes. Its errors name it: the text is built only then.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// A room's envelope: counted in
    /// [`AdapterStats::published`](rooms_adapter::adapter::AdapterStats::published).
    Room(RoomName),
    /// A cluster control frame: not a broadcast, not counted as one.
    Control,
}

/// Publishing to a destination (`None`: to several), as errors name it.
#[derive(Debug, Clone, Copy)]
struct Publish<'a>(Option<&'a Destination>);

impl fmt::Display for Publish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(Destination::Room(room)) => {
                write!(f, "publish to room {:?}", truncated(room.as_str()))
            }
            Some(Destination::Control) => f.write_str("publish to the control channel"),
            None => f.write_str("publish"),
        }
    }
}

/// One publish: what to notify, and where.
struct Request {
    channel: String,
    bytes: Bytes,
    destination: Destination,
}

/// A publish waiting for a worker.
struct Job {
    request: Request,
    reply: oneshot::Sender<Result<(), PostgresError>>,
}

impl Request {
    /// What this publish's errors call it.
    fn operation(&self) -> Publish<'_> {
        Publish(Some(&self.destination))
    }
}

/// The publishing pool and the SQL it runs. A publish with nothing queued
/// and a pooled connection to spare runs on its caller's task (see
/// [`publish`](Self::publish)); the others are queued to `pool_size`
/// workers, each of which takes every queued publish (up to
/// [`MAX_PIPELINE`]) and pipelines them on one pooled connection:
/// consecutive inline notifications as one statement (so one transaction
/// and one commit: PostgreSQL serialises the commits of notifying
/// transactions cluster-wide, so a commit per message is what limits
/// throughput), each attachment as its own statement, sent back to back,
/// answered in order (see [`batch`]). A caller that awaits each publish
/// before the next keeps its order.
pub(crate) struct Publisher {
    inner: Arc<Inner>,
    jobs: mpsc::Sender<Job>,
    workers: Vec<AbortHandle>,
    /// One permit: the publish running on its caller's task (see
    /// [`publish`](Self::publish)).
    direct: Semaphore,
}

pub(crate) struct Inner {
    pool: Pool,
    medium: String,
    publish_timeout: Duration,
    threshold: usize,
    insert_and_notify: String,
    fetch: String,
    cleanup: String,
    ttl_seconds: f64,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

impl std::ops::Deref for Publisher {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Publisher {
    pub(crate) fn new(config: &PostgresConfig, medium: &str) -> Result<Arc<Self>, PostgresError> {
        let mut pg = config.pg.clone();
        pg.connect_timeout(config.connect_timeout);
        // A transaction that notifies gets a transaction id, so its commit
        // waits for a WAL flush: one disk flush per publish. Notifications
        // and attachment rows are ephemeral; nothing is lost by not waiting
        // (a server crash loses unread notifications anyway).
        let options = match pg.get_options() {
            Some(options) => format!("{options} -c synchronous_commit=off"),
            None => "-c synchronous_commit=off".to_owned(),
        };
        pg.options(&options);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &config.connector {
            Connector::Plain => Manager::from_config(pg, NoTls, manager_config),
            #[cfg(feature = "tls")]
            Connector::Rustls(tls) => Manager::from_config(pg, tls.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.publish_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|error| PostgresError::InvalidSetting {
                setting: "pool_size",
                reason: error.to_string(),
            })?;
        let table = config.quoted_table();
        let inner = Arc::new(Inner {
            pool,
            medium: medium.to_owned(),
            publish_timeout: config.publish_timeout,
            threshold: config.attachment_threshold,
            insert_and_notify: format!(
                "WITH a AS (INSERT INTO {table} (payload) VALUES ($2) RETURNING id) \
                 SELECT pg_notify($1, '@' || a.id::text) FROM a"
            ),
            fetch: format!(
                "SELECT octet_length(payload)::int8, \
                 CASE WHEN octet_length(payload) <= $2 THEN payload END \
                 FROM {table} WHERE id = $1"
            ),
            cleanup: format!(
                "DELETE FROM {table} WHERE created_at < now() - make_interval(secs => $1)"
            ),
            ttl_seconds: config.attachment_ttl.as_secs_f64(),
        });
        let (jobs, queue) = mpsc::channel(JOB_QUEUE);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let workers = (0..config.pool_size)
            .map(|_| tokio::spawn(work(Arc::clone(&inner), Arc::clone(&queue))).abort_handle())
            .collect();
        Ok(Arc::new(Self {
            inner,
            jobs,
            workers,
            direct: Semaphore::new(1),
        }))
    }

    /// Publishes `bytes` on `channel`: inline when the frame fits the
    /// threshold, else through the attachments table (one statement, so one
    /// transaction: receivers are notified when the row is visible). Within
    /// the publish timeout.
    ///
    /// When nothing waits for a worker, the pool has a connection to spare
    /// (idle, or room to open one, and nobody waiting for one) and no other
    /// publish takes this path, the publish runs on the caller's task: an
    /// idle worker would have taken it alone anyway, and the hand-over to a
    /// worker's task cost a wake-up per message (PostgreSQL latency p50
    /// 1.27x raw tokio-postgres with every publish handed over). It never
    /// takes a connection a busy worker waits for. Concurrent publishes
    /// still queue and are pipelined by the workers.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        bytes: Bytes,
        destination: Destination,
    ) -> Result<(), PostgresError> {
        let operation = || Publish(Some(&destination)).to_string();
        let request = Request {
            channel: channel.to_owned(),
            bytes,
            destination: destination.clone(),
        };
        let closed = || PostgresError::Pool {
            medium: self.medium.clone(),
            operation: operation(),
            reason: "the adapter is shutting down".into(),
        };
        let work = async {
            if self.jobs.capacity() == self.jobs.max_capacity()
                && self.has_spare_connection()
                && let Ok(_direct) = self.direct.try_acquire()
            {
                let mut results = self.inner.pipeline(std::slice::from_ref(&request)).await?;
                return results.pop().unwrap_or_else(|| {
                    Err(PostgresError::Pool {
                        medium: self.medium.clone(),
                        operation: operation(),
                        reason: "the pipeline answered nothing".into(),
                    })
                });
            }
            let (reply, answer) = oneshot::channel();
            let job = Job { request, reply };
            self.jobs.send(job).await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        };
        match tokio::time::timeout(self.publish_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(PostgresError::Timeout {
                operation: operation(),
                after: self.publish_timeout,
            }),
        }
    }
}

/// A worker: takes what is queued, pipelines it on one pooled connection.
async fn work(inner: Arc<Inner>, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut queue = queue.lock().await;
            match queue.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < MAX_PIPELINE {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        // Callers that gave up (timed out) are skipped.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (requests, replies): (Vec<Request>, Vec<_>) =
            jobs.into_iter().map(|job| (job.request, job.reply)).unzip();
        match inner.pipeline(&requests).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(failure) => {
                let message = failure.to_string();
                let mut first = Some(failure);
                for (request, reply) in requests.iter().zip(replies) {
                    let error = first.take().unwrap_or_else(|| PostgresError::Pool {
                        medium: inner.medium.clone(),
                        operation: request.operation().to_string(),
                        reason: message.clone(),
                    });
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

impl Inner {
    /// Whether the pool has a connection no one waits for: an idle one, or
    /// room to open one.
    fn has_spare_connection(&self) -> bool {
        let status = self.pool.status();
        status.waiting == 0 && (status.available > 0 || status.size < status.max_size)
    }

    async fn client(
        &self,
        operation: impl fmt::Display,
    ) -> Result<deadpool_postgres::Object, PostgresError> {
        self.pool.get().await.map_err(|error| {
            use deadpool_postgres::PoolError;
            match error {
                PoolError::Backend(source) => {
                    PostgresError::from_client(&self.medium, operation, source)
                }
                PoolError::Timeout(_) => PostgresError::Timeout {
                    operation: format!("{operation} (waiting for a pooled connection)"),
                    after: self.publish_timeout,
                },
                other => PostgresError::Pool {
                    medium: self.medium.clone(),
                    operation: operation.to_string(),
                    reason: other.to_string(),
                },
            }
        })
    }

    /// Prepares `sql` on `client` (cached per connection).
    async fn prepare(
        &self,
        client: &deadpool_postgres::Object,
        sql: &str,
        operation: impl fmt::Display,
    ) -> Result<tokio_postgres::Statement, PostgresError> {
        client
            .prepare_cached(sql)
            .await
            .map_err(|e| PostgresError::from_client(&self.medium, operation, e))
    }

    /// Creates the attachments table if it is missing (concurrent creators
    /// are fine: a lost race is not an error).
    pub(crate) async fn ensure_table(&self, table: &str) -> Result<(), PostgresError> {
        let operation = "create the attachments table";
        let client = self.client(operation).await?;
        match client.batch_execute(&table_sql(table)).await {
            Ok(()) => Ok(()),
            Err(error)
                if error.as_db_error().is_some_and(|db| {
                    // unique_violation (pg_type) or duplicate_table /
                    // duplicate_object: another node created it meanwhile.
                    matches!(db.code().code(), "23505" | "42P07" | "42710")
                }) =>
            {
                Ok(())
            }
            Err(error) => Err(PostgresError::from_client(&self.medium, operation, error)),
        }
    }

    /// Reads attachment `id`, unless it is larger than `limit` bytes.
    pub(crate) async fn fetch(&self, id: i64, limit: usize) -> Result<Fetched, PostgresError> {
        let operation = "read an attachment";
        let work = async {
            let client = self.client(operation).await?;
            let statement = self.prepare(&client, &self.fetch, operation).await?;
            let limit = i32::try_from(limit).unwrap_or(i32::MAX);
            let row = client
                .query_opt(&statement, &[&id, &limit])
                .await
                .map_err(|e| PostgresError::from_client(&self.medium, operation, e))?;
            let Some(row) = row else {
                return Ok(Fetched::Missing);
            };
            let size: i64 = row
                .try_get(0)
                .map_err(|e| PostgresError::from_client(&self.medium, operation, e))?;
            let payload: Option<Vec<u8>> = row
                .try_get(1)
                .map_err(|e| PostgresError::from_client(&self.medium, operation, e))?;
            Ok(match payload {
                Some(payload) => Fetched::Payload(payload),
                None => Fetched::TooLarge(usize::try_from(size).unwrap_or(usize::MAX)),
            })
        };
        match tokio::time::timeout(self.publish_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(PostgresError::Timeout {
                operation: operation.to_owned(),
                after: self.publish_timeout,
            }),
        }
    }

    /// Deletes attachment rows older than the TTL; returns how many.
    pub(crate) async fn cleanup(&self) -> Result<u64, PostgresError> {
        let operation = "delete old attachments";
        let client = self.client(operation).await?;
        client
            .execute(&self.cleanup, &[&self.ttl_seconds])
            .await
            .map_err(|e| PostgresError::from_client(&self.medium, operation, e))
    }

    /// Closes the pool: its connections are dropped.
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}

/// The DDL of the attachments table `table` (quoted).
pub(crate) fn table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n    \
         id bigserial PRIMARY KEY,\n    \
         created_at timestamptz NOT NULL DEFAULT now(),\n    \
         payload bytea NOT NULL\n);\n\
         CREATE INDEX IF NOT EXISTS {index} ON {table} (created_at);",
        index = crate::channel::quote_identifier(&format!(
            "{}_created_at",
            table.rsplit('.').next().unwrap_or(table).trim_matches('"')
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_room_truncated_or_the_control_channel() {
        let room = Destination::Room(RoomName::from(format!("{}\"b", "a".repeat(50))));
        assert_eq!(
            Publish(Some(&room)).to_string(),
            format!("publish to room {:?}", "a".repeat(40))
        );
        let quoted = Destination::Room(RoomName::from("say \"hi\""));
        assert_eq!(
            Publish(Some(&quoted)).to_string(),
            r#"publish to room "say \"hi\"""#
        );
        assert_eq!(
            Publish(Some(&Destination::Control)).to_string(),
            "publish to the control channel"
        );
        assert_eq!(Publish(None).to_string(), "publish");
    }
}
