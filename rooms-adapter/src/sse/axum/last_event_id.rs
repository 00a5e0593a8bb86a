//! The `Last-Event-ID` request header as an extractor.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;

/// The `Last-Event-ID` request header, which a reconnecting `EventSource`
/// sends with the id of the last event it received. `None` when the header is
/// absent, empty, or not valid UTF-8.
///
/// Extracting it never fails.
///
/// ```
/// use rooms_adapter::sse::axum::LastEventId;
///
/// async fn handler(LastEventId(last): LastEventId) -> String {
///     match last {
///         Some(id) => format!("welcome back, you saw everything up to {id}"),
///         None => "welcome".to_owned(),
///     }
/// }
/// let app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastEventId(pub Option<String>);

/// The `Last-Event-ID` header name.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(LastEventId(
            parts
                .headers
                .get(&LAST_EVENT_ID)
                .and_then(|value| value.to_str().ok())
                .filter(|value| !value.is_empty())
                .map(str::to_owned),
        ))
    }
}
