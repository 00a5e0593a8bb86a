//! Publish drivers: how envelopes reach Redis.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rooms_adapter::Error;

/// One publish of a batch: a payload for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishItem {
    /// The channel, `{prefix}{room}`.
    pub channel: String,
    /// The encoded envelope.
    pub payload: Bytes,
}

/// Sends payloads to Redis channels (`PUBLISH`). Implement it to publish
/// through another client library.
///
/// The adapter publishes through one small trait, [`PublishDriver`]. The
/// bundled drivers sit behind cargo features:
///
/// | feature            | driver                                 | connection                           |
/// |--------------------|----------------------------------------|--------------------------------------|
/// | `redis` (default)  | `RedisDriver` | redis-rs `ConnectionManager` (one reconnecting multiplexed connection) |
/// | `deadpool`         | `DeadpoolDriver` | a deadpool-redis pool              |
/// | `bb8`              | `Bb8Driver` | a bb8 + bb8-redis pool               |
///
/// Subscribing never goes through a driver: a subscribed Redis connection can
/// run nothing else, so the adapter always keeps one dedicated subscriber
/// connection of its own (the *two-connection rule*).
///
/// # Writing a driver
///
/// A driver for another client library implements [`PublishDriver`]: publish
/// one payload, and (optionally, for speed) a batch as one pipeline. Report
/// failures as [`rooms_adapter::Error`]: [`Error::Unavailable`] when Redis
/// cannot be reached (retryable), [`Error::Backend`] otherwise. The adapter
/// bounds every call with its publish timeout, so a driver need not.
///
/// For room history the adapter also runs Lua scripts through the driver:
/// implement [`runs_scripts`](PublishDriver::runs_scripts) and
/// [`run_script`](PublishDriver::run_script) (with redis-rs,
/// [`run_script_on`] does it on any connection). A driver without them
/// still publishes; the adapter then does not declare the history
/// capability.
///
/// ```
/// use std::sync::Mutex;
/// use async_trait::async_trait;
/// use rooms_adapter::Error;
/// use rooms_adapter_redis::{PublishDriver, PublishItem, RedisAdapter};
///
/// /// Records publishes instead of sending them (e.g. for tests).
/// #[derive(Default)]
/// struct Recorder(Mutex<Vec<(String, Vec<u8>)>>);
///
/// #[async_trait]
/// impl PublishDriver for Recorder {
///     fn name(&self) -> &str {
///         "recorder"
///     }
///
///     async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
///         let mut log = self.0.lock().map_err(|_| Error::Config("poisoned".into()))?;
///         log.push((channel.to_owned(), payload.to_vec()));
///         Ok(())
///     }
///
///     // Optional: send a whole batch in one round trip (a pipeline).
///     async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
///         for item in batch {
///             self.publish(&item.channel, &item.payload).await?;
///         }
///         Ok(())
///     }
/// }
///
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379")
///     .driver(Recorder::default())
///     .build()?;
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
///
/// [`Error::Unavailable`]: rooms_adapter::Error::Unavailable
/// [`Error::Backend`]: rooms_adapter::Error::Backend
#[async_trait]
pub trait PublishDriver: Send + Sync + 'static {
    /// A short name for logs, e.g. `redis`, `deadpool`, `bb8`.
    fn name(&self) -> &str;

    /// Publishes one payload on one channel.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error>;

    /// Publishes several payloads, in order, ideally as one pipeline (one
    /// round trip). An error means some of them may not have been sent; it is
    /// reported to every publish of the batch. The default publishes one by
    /// one.
    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        for item in batch {
            self.publish(&item.channel, &item.payload).await?;
        }
        Ok(())
    }

    /// Whether [`run_script`](Self::run_script) works. The adapter declares
    /// the history capability only with a driver that runs scripts. The
    /// default is `false`.
    fn runs_scripts(&self) -> bool {
        false
    }

    /// Runs a Lua script whose keys (and channels) all live in one hash
    /// slot ([`ScriptCall::slot`]; on a cluster, on the master serving it),
    /// and returns its reply: `EVALSHA` ([`ScriptCall::evalsha`]), then
    /// `EVAL` ([`ScriptCall::eval`]) when the server answers `NOSCRIPT`
    /// ([`run_script_on`] does both on any redis-rs connection). A script
    /// may write: a driver must not send it twice unless it cannot have
    /// reached Redis the first time. The default answers
    /// [`Error::Unsupported`].
    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        let _ = call;
        Err(Error::Unsupported {
            adapter: self.name().to_owned(),
            capability: "Lua scripts (room history)",
        })
    }
}

/// One run of a Lua script, with its keys and arguments (see
/// [`PublishDriver::run_script`]).
///
/// The `EVALSHA` command is built once, when the call is made; `EVAL` (the
/// rare `NOSCRIPT` case) is built from it on demand.
#[derive(Debug, Clone)]
pub struct ScriptCall {
    source: &'static str,
    slot: u16,
    /// `EVALSHA sha1 numkeys keys.. args..`.
    evalsha: redis::Cmd,
}

impl ScriptCall {
    /// A call of `script` (whose source is `source`) with `keys` (all in
    /// `slot`) and `args`.
    pub(crate) fn new<'a>(
        source: &'static str,
        script: &'static redis::Script,
        slot: u16,
        keys: &[&[u8]],
        args: impl IntoIterator<Item = ScriptArg<'a>>,
    ) -> Self {
        let args: Vec<ScriptArg<'a>> = args.into_iter().collect();
        // Sized once: growing the command's buffers argument by argument
        // cost more than building it.
        let data = keys.iter().map(|key| key.len()).sum::<usize>()
            + args
                .iter()
                .map(|arg| match arg {
                    ScriptArg::Bytes(bytes) => bytes.len(),
                    ScriptArg::Number(_) => 39,
                })
                .sum::<usize>()
            + 64;
        let mut evalsha = redis::Cmd::with_capacity(3 + keys.len() + args.len(), data);
        evalsha
            .arg("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len());
        for key in keys {
            evalsha.arg(*key);
        }
        for arg in args {
            match arg {
                ScriptArg::Bytes(bytes) => evalsha.arg(bytes),
                ScriptArg::Number(n) => evalsha.arg(n),
            };
        }
        Self {
            source,
            slot,
            evalsha,
        }
    }

    /// The hash slot of every key of the call.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// `EVALSHA sha1 numkeys keys.. args..`.
    pub fn evalsha(&self) -> redis::Cmd {
        self.evalsha.clone()
    }

    /// `EVAL source numkeys keys.. args..` (also caches the script on that
    /// server).
    pub fn eval(&self) -> redis::Cmd {
        let mut eval = redis::cmd("EVAL");
        eval.arg(self.source);
        // After `EVALSHA sha1`: numkeys, keys, args.
        for arg in self.evalsha.args_iter().skip(2) {
            if let redis::Arg::Simple(bytes) = arg {
                eval.arg(bytes);
            }
        }
        eval
    }
}

/// One argument of a [`ScriptCall`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScriptArg<'a> {
    Bytes(&'a [u8]),
    Number(u128),
}

/// Whether Redis answered that it does not know the script.
pub(crate) fn no_script(error: &redis::RedisError) -> bool {
    error.code() == Some("NOSCRIPT")
}

/// Runs `call` on `connection`: `EVALSHA`, then `EVAL` on `NOSCRIPT`.
pub async fn run_script_on<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    call: &ScriptCall,
) -> Result<redis::Value, redis::RedisError> {
    match call.evalsha.query_async(connection).await {
        Err(error) if no_script(&error) => call.eval().query_async(connection).await,
        other => other,
    }
}

#[async_trait]
impl<D: PublishDriver + ?Sized> PublishDriver for std::sync::Arc<D> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        (**self).publish(channel, payload).await
    }

    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        (**self).publish_batch(batch).await
    }

    fn runs_scripts(&self) -> bool {
        (**self).runs_scripts()
    }

    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        (**self).run_script(call).await
    }
}

/// What the bundled drivers need to know to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverOptions {
    /// Limit on establishing one connection.
    pub connect_timeout: Duration,
    /// Limit on one command's answer (and, for pools, on waiting for a
    /// connection).
    pub response_timeout: Duration,
    /// Connections in a pool (`deadpool`, `bb8`).
    pub pool_size: usize,
}

impl DriverOptions {
    /// Options with these timeouts and the default pool size.
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            response_timeout,
            pool_size: crate::config::DEFAULT_POOL_SIZE,
        }
    }

    /// Sets the pool size.
    #[must_use]
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self::new(
            crate::config::DEFAULT_CONNECT_TIMEOUT,
            crate::config::DEFAULT_PUBLISH_TIMEOUT,
        )
    }
}

/// `redis at host:port`, never with credentials.
pub(crate) fn medium_of(client: &redis::Client) -> String {
    format!("redis at {}", client.get_connection_info().addr())
}

/// `PUBLISH channel payload`.
#[allow(dead_code)]
pub(crate) fn publish_cmd(channel: &str, payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(channel).arg(payload);
    cmd
}

/// One pipeline of `PUBLISH`es, replies ignored.
#[allow(dead_code)]
pub(crate) fn publish_pipeline(batch: &[PublishItem]) -> redis::Pipeline {
    let mut pipe = redis::Pipeline::with_capacity(batch.len());
    for item in batch {
        pipe.cmd("PUBLISH")
            .arg(&item.channel)
            .arg(&item.payload[..])
            .ignore();
    }
    pipe
}
