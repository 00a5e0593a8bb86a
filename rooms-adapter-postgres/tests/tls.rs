//! TLS against real servers: throwaway PostgreSQL clusters of the test kit
//! with `ssl = on` and certificates made at test time. Delivery across two
//! adapters verified against the generated CA (pool and listening
//! connection both over TLS), a wrong CA, a server without TLS, client
//! certificate authentication; and the builder's checks of certificate
//! files and `sslmode`.
#![cfg(feature = "tls")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::Pair;
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_postgres::tokio_postgres::config::SslMode;
use rooms_adapter_postgres::{PostgresAdapter, PostgresAdapterBuilder};
use rooms_testkit::certs::TestCerts;
use rooms_testkit::postgres::{connect_direct, fast_builder};
use rooms_testkit::postgres_server::{PostgresServer, ServerOptions, ServerTls};
use rooms_testkit::refusal::refused_fast;

/// The connect timeout of the adapters here ([`fast_builder`]'s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A server with TLS on, its certificate signed by `certs`' CA, which also
/// verifies client certificates; `certuser` must present one.
async fn tls_server(certs: &TestCerts) -> PostgresServer {
    let server = PostgresServer::start(ServerOptions {
        tls: Some(ServerTls {
            cert: certs.server_cert(),
            key: certs.server_key(),
            client_ca: Some(certs.ca()),
        }),
        hba: vec![
            "hostssl all certuser 127.0.0.1/32 cert".into(),
            "host all certuser 127.0.0.1/32 reject".into(),
        ],
    })
    .await
    .expect("a TLS PostgreSQL server starts");
    let admin = connect_direct(&config(&server.url())).await.unwrap();
    admin
        .batch_execute("CREATE ROLE certuser LOGIN; GRANT CREATE ON SCHEMA public TO certuser;")
        .await
        .unwrap();
    server
}

fn config(url: &str) -> rooms_adapter_postgres::tokio_postgres::Config {
    rooms_adapter_postgres::tokio_postgres::Config::from_str(url).unwrap()
}

/// The test kit's short timeouts on `url`.
fn builder(url: &str) -> PostgresAdapterBuilder {
    fast_builder(config(url)).application_name("rooms-tls-test")
}

/// [`builder`], trusting `ca`.
fn trusting(url: &str, ca: PathBuf) -> PostgresAdapterBuilder {
    builder(url).tls_root_certificates(ca)
}

/// A receiver and a publish-only adapter built by `builder`; a small and an
/// attachment-sized message cross from one to the other. The receiver stays
/// connected.
async fn delivers(builder: PostgresAdapterBuilder) -> Arc<PostgresAdapter> {
    let make = || Arc::new(builder.clone().build().unwrap());
    let room = RoomName::from("secure");
    let mut nodes = Pair::connect(make(), make(), 64, &[&room]).await;
    let big = "x".repeat(20_000);
    for data in ["over TLS", big.as_str()] {
        nodes.publish(&room, data).await;
        assert_eq!(nodes.next_message().await.1.message().data, data);
    }
    nodes.publisher.disconnect().await.unwrap();
    nodes.receiver
}

/// How many sessions of `rooms-tls-test` use TLS, and how many do not.
async fn sessions_by_tls(server: &PostgresServer) -> (i64, i64) {
    let admin = connect_direct(&config(&server.url())).await.unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'rooms-tls-test'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Connects an adapter of `builder` and expects it to fail within the
/// connect timeout (plus slack), with an error that is not retryable.
async fn fails_fast(builder: PostgresAdapterBuilder) -> Error {
    refused_fast(&builder.build().unwrap(), CONNECT_TIMEOUT)
        .await
        .unwrap()
}

#[tokio::test]
async fn delivery_over_tls_verified_against_the_generated_ca() {
    let certs = TestCerts::generate().unwrap();
    let server = tls_server(&certs).await;
    let url = server.url_for("postgres", "sslmode=require");
    let tls = trusting(&url, certs.ca());
    assert_eq!(
        tls.clone().build().unwrap().config().ssl_mode(),
        SslMode::Require
    );
    let receiver = delivers(tls).await;
    // The listening connection and the receiver's pool (attachment reads)
    // are TLS sessions; none is plain.
    let (tls, plain) = sessions_by_tls(&server).await;
    assert!(tls >= 2, "{tls} TLS sessions");
    assert_eq!(plain, 0);
    receiver.disconnect().await.unwrap();
}

#[tokio::test]
async fn root_certificates_alone_mean_prefer_and_no_options_mean_plain() {
    let certs = TestCerts::generate().unwrap();
    let server = tls_server(&certs).await;
    // No sslmode: roots turn TLS on where the server offers it.
    let url = server.url_for("postgres", "");
    let tls = trusting(&url, certs.ca());
    assert_eq!(
        tls.clone().build().unwrap().config().ssl_mode(),
        SslMode::Prefer
    );
    let receiver = delivers(tls).await;
    assert_eq!(sessions_by_tls(&server).await.1, 0, "a plain session");
    receiver.disconnect().await.unwrap();

    // Without TLS options the adapter stays plain (it never speaks
    // unverified TLS), as before TLS support.
    let plain = builder(&url).build().unwrap();
    assert!(!plain.config().uses_tls());
    assert_eq!(plain.config().ssl_mode(), SslMode::Disable);
}

#[tokio::test]
async fn a_wrong_ca_fails_within_the_connect_timeout_with_a_clear_error() {
    let certs = TestCerts::generate().unwrap();
    let server = tls_server(&certs).await;
    let url = server.url_for("postgres", "sslmode=require");
    let error = fails_fast(trusting(&url, certs.other_ca())).await;
    let text = error.to_string();
    assert!(
        text.contains("TLS") && text.contains("not trusted") && text.contains("UnknownIssuer"),
        "{text}"
    );
    // The same through `require_tls` and a URL without sslmode.
    fails_fast(trusting(&server.url_for("postgres", ""), certs.other_ca()).require_tls(true)).await;
}

#[tokio::test]
async fn a_server_without_tls_fails_when_tls_is_required() {
    let certs = TestCerts::generate().unwrap();
    let server = PostgresServer::start(ServerOptions::default())
        .await
        .unwrap();
    let url = server.url_for("postgres", "sslmode=require");
    let error = fails_fast(trusting(&url, certs.ca())).await;
    assert!(
        error.to_string().contains("server does not support TLS"),
        "{error}"
    );
    // `prefer` (roots, no require) goes plain to such a server.
    let tls = trusting(&server.url_for("postgres", ""), certs.ca());
    let receiver = delivers(tls).await;
    receiver.disconnect().await.unwrap();
}

#[tokio::test]
async fn client_certificate_authentication() {
    let certs = TestCerts::generate().unwrap();
    let server = tls_server(&certs).await;
    let url = server.url_for("certuser", "sslmode=require");
    let (cert, key) = certs.client("certuser").unwrap();
    let receiver = delivers(trusting(&url, certs.ca()).tls_client_certificate(&cert, &key)).await;
    receiver.disconnect().await.unwrap();

    // No client certificate: the server refuses the session.
    let error = fails_fast(trusting(&url, certs.ca())).await;
    assert!(
        error
            .to_string()
            .contains("requires a valid client certificate"),
        "{error}"
    );
    // A certificate of a CA the server does not trust.
    let (cert, key) = certs.untrusted_client("certuser").unwrap();
    let error = fails_fast(trusting(&url, certs.ca()).tls_client_certificate(&cert, &key)).await;
    let text = error.to_string();
    assert!(text.contains("TLS") && text.contains("UnknownCA"), "{text}");
    // Another user's certificate (CN=someone) for certuser.
    let (cert, key) = certs.client("someone").unwrap();
    let error = fails_fast(trusting(&url, certs.ca()).tls_client_certificate(&cert, &key)).await;
    assert!(
        error
            .to_string()
            .contains("certificate authentication failed"),
        "{error}"
    );
}

#[test]
fn certificate_files_are_checked_by_build_and_named() {
    let certs = TestCerts::generate().unwrap();
    let url = "postgres://app@127.0.0.1:5432/app?sslmode=require";
    let missing = certs.dir().join("missing.pem");
    let error = PostgresAdapter::builder(url)
        .tls_root_certificates(&missing)
        .build()
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("tls_root_certificates") && text.contains("missing.pem"),
        "{text}"
    );
    assert!(matches!(error, Error::Config(_)), "{error:?}");

    // A key is not a certificate.
    let error = PostgresAdapter::builder(url)
        .tls_root_certificates(certs.server_key())
        .build()
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("server.key") && text.contains("no PEM certificate"),
        "{text}"
    );

    // A certificate is not a key; a key of another certificate.
    let (cert, key) = certs.client("app").unwrap();
    let error = PostgresAdapter::builder(url)
        .tls_client_certificate(&cert, &cert)
        .build()
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("tls_client_certificate") && text.contains("client-app.crt"),
        "{text}"
    );
    let error = PostgresAdapter::builder(url)
        .tls_client_certificate(&cert, certs.server_key())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("server.key"), "{error}");
    // The right pair builds.
    PostgresAdapter::builder(url)
        .tls_client_certificate(&cert, &key)
        .build()
        .unwrap();
}

#[test]
fn sslmode_disable_with_tls_options_is_an_error() {
    let url = "postgres://app@127.0.0.1:5432/app?sslmode=disable";
    let error = PostgresAdapter::builder(url)
        .require_tls(true)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("sslmode=disable"), "{error}");
    let plain = PostgresAdapter::builder(url).build().unwrap();
    assert!(!plain.config().uses_tls());
    let required = PostgresAdapter::builder(url.replace("disable", "require"))
        .build()
        .unwrap();
    assert!(required.config().uses_tls());
}
