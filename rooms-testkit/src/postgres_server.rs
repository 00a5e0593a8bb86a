//! Where the PostgreSQL server of the tests is: a running server (tests
//! never start or kill it; they isolate themselves with their own channel
//! prefixes and tables, and inject faults with a
//! [`FaultProxy`](crate::tcp_proxy::FaultProxy)).

/// Environment variable with the URL of the PostgreSQL server tests use.
pub const URL_ENV: &str = "ROOMS_POSTGRES_URL";

/// The server tests use without [`URL_ENV`] (the one this kind of machine
/// runs: trust authentication, database `test`).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the PostgreSQL server tests use.
pub fn server_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}
