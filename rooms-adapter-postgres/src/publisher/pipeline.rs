//! One pipeline: a batch of publishes on one pooled connection, consecutive
//! inline notifications as one statement (one transaction, one commit), each
//! attachment as its own statement, sent back to back and answered in order.

use std::ops::Range;

use super::{Inner, MAX_PIPELINE, Publish, Request};
use crate::batch::{self, Statement};
use crate::error::PostgresError;
use crate::frame;

/// Notifies many (channel, payload) pairs in one statement, so one
/// transaction and one commit, in array order.
const NOTIFY_MANY: &str = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)";

impl Inner {
    /// Runs `requests` pipelined on one pooled connection; one result each.
    pub(super) async fn pipeline(
        &self,
        requests: &[Request],
    ) -> Result<Vec<Result<(), PostgresError>>, PostgresError> {
        let operation = match requests {
            [request] => request.operation(),
            _ => Publish(None),
        };
        let client = self.client(operation).await?;
        let frames: Vec<Option<std::borrow::Cow<'_, str>>> = requests
            .iter()
            .map(|request| frame::inline_text(&request.bytes, self.threshold))
            .collect();
        let planned: Vec<(&str, Option<&str>)> = requests
            .iter()
            .zip(&frames)
            .map(|(request, frame)| (request.channel.as_str(), frame.as_deref()))
            .collect();
        let statements = batch::plan(&planned, MAX_PIPELINE);
        let pipeline = Pipeline {
            inner: self,
            client: &client,
            notify: self
                .prepare(&client, "SELECT pg_notify($1, $2)", operation)
                .await?,
            notify_many: if statements
                .iter()
                .any(|s| matches!(s, Statement::Notify(range) if range.len() > 1))
            {
                Some(self.prepare(&client, NOTIFY_MANY, operation).await?)
            } else {
                None
            },
            attach: if frames.iter().any(Option::is_none) {
                Some(
                    self.prepare(&client, &self.insert_and_notify, operation)
                        .await?,
                )
            } else {
                None
            },
            requests,
            planned: &planned,
        };
        // Sent back to back on one connection (tokio-postgres pipelines
        // them), answered in order.
        let answered =
            futures_util::future::join_all(statements.iter().map(|s| pipeline.run(s))).await;
        // One result per request: a statement's result for each of its requests.
        let mut results: Vec<Result<(), PostgresError>> = Vec::with_capacity(requests.len());
        for (result, range) in answered {
            match result {
                Ok(()) => results.extend(range.map(|_| Ok(()))),
                Err(error) => {
                    let message = error.to_string();
                    let mut first = Some(error);
                    for index in range {
                        let error = first.take().unwrap_or_else(|| PostgresError::Pool {
                            medium: self.medium.clone(),
                            operation: requests
                                .get(index)
                                .map_or(Publish(None), Request::operation)
                                .to_string(),
                            reason: message.clone(),
                        });
                        results.push(Err(error));
                    }
                }
            }
        }
        Ok(results)
    }
}

/// One pipeline (a worker's, or a publish on its caller's task): its pooled
/// connection, the statements it prepared, and its publishes. A method per
/// kind of [`Statement`].
struct Pipeline<'a> {
    inner: &'a Inner,
    client: &'a deadpool_postgres::Object,
    /// One notification.
    notify: tokio_postgres::Statement,
    /// [`NOTIFY_MANY`], when a statement notifies several.
    notify_many: Option<tokio_postgres::Statement>,
    /// Insert an attachment and notify its id, when a publish needs one.
    attach: Option<tokio_postgres::Statement>,
    requests: &'a [Request],
    /// Each publish's channel and inline text (`None`: an attachment).
    planned: &'a [(&'a str, Option<&'a str>)],
}

impl Pipeline<'_> {
    /// Runs `statement`: its result, and the publishes it answers.
    async fn run(&self, statement: &Statement) -> (Result<(), PostgresError>, Range<usize>) {
        let (result, range) = match statement {
            Statement::Notify(range) => (self.notify(range.clone()).await, range.clone()),
            Statement::Attach(index) => {
                let Some(request) = self.requests.get(*index) else {
                    return (Ok(()), *index..*index);
                };
                (self.attach(request).await, *index..*index + 1)
            }
        };
        let operation = self
            .requests
            .get(range.start)
            .map_or(Publish(None), Request::operation);
        let result = result
            .map(|_| ())
            .map_err(|e| PostgresError::from_client(&self.inner.medium, operation, e));
        (result, range)
    }

    /// [`Statement::Notify`]: the inline publishes `range`, in order, in
    /// one statement.
    async fn notify(&self, range: Range<usize>) -> Result<u64, tokio_postgres::Error> {
        let batch = self.planned.get(range).unwrap_or_default();
        match (batch, &self.notify_many) {
            ([(channel, Some(text))], _) => {
                self.client.execute(&self.notify, &[channel, text]).await
            }
            (_, Some(many)) => {
                let channels: Vec<&str> = batch.iter().map(|(c, _)| *c).collect();
                let texts: Vec<&str> = batch.iter().map(|(_, t)| t.unwrap_or_default()).collect();
                self.client.execute(many, &[&channels, &texts]).await
            }
            _ => Ok(0),
        }
    }

    /// [`Statement::Attach`]: `request`'s payload into the attachments table,
    /// and its id notified, in one statement.
    async fn attach(&self, request: &Request) -> Result<u64, tokio_postgres::Error> {
        match &self.attach {
            Some(attach) => {
                self.client
                    .execute(attach, &[&request.channel, &&request.bytes[..]])
                    .await
            }
            None => Ok(0),
        }
    }
}
