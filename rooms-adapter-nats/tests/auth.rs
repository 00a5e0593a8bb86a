//! Every credential and TLS option of the builder against a real
//! `nats-server` started with a config file for it: user and password,
//! token, NKey, a `.creds` file (operator/JWT mode), TLS verified against a
//! CA made at test time, TLS with a client certificate the server verifies
//! (`verify: true`), and TLS required of a server without it. For each, the
//! good credential delivers a message between two adapters, and a wrong one
//! fails within the connect timeout with an error that says what is wrong
//! and is not retryable (never a hang).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink, RoomAdapter};
use rooms_adapter::{Envelope, Error, NodeId, RoomName, SseMessage};
use rooms_adapter_nats::NatsAdapterBuilder;
use rooms_testkit::certs::TestCerts;
use rooms_testkit::nats::fast_builder;
use rooms_testkit::nats_server::NatsServer;
use rooms_testkit::refusal::refused_fast;

/// The connect timeout of [`fast_builder`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Two adapters of `builder` (a receiver and a publisher) exchange a
/// message.
async fn delivers(builder: NatsAdapterBuilder) {
    let receiver = builder.clone().build().unwrap();
    let publisher = builder.build().unwrap();
    let (sink, mut events) = EventSink::bounded(64);
    receiver
        .connect(NodeId::from("rx"), sink)
        .await
        .expect("the receiver connects");
    publisher
        .connect_publisher(NodeId::from("tx"))
        .await
        .expect("the publisher connects");
    let room = RoomName::from("guarded");
    receiver.subscribe(&room).await.unwrap();
    let envelope = Envelope::new(NodeId::from("tx"), SseMessage::new("let in"));
    publisher.publish(&room, &envelope).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Message { envelope, .. })) => {
                assert_eq!(envelope.message().data, "let in");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    }
    receiver.disconnect().await.unwrap();
    publisher.disconnect().await.unwrap();
}

/// An adapter of `builder` fails to connect within the connect timeout
/// (plus slack), with an error that is not retryable and contains each of
/// `words`.
async fn fails_fast(builder: NatsAdapterBuilder, words: &[&str]) -> Error {
    let adapter = builder.build().unwrap();
    let error = refused_fast(&adapter, CONNECT_TIMEOUT).await.unwrap();
    let text = error.to_string();
    for word in words {
        assert!(text.contains(word), "{word:?} not in {text:?}");
    }
    error
}

#[tokio::test]
async fn user_and_password() {
    let server = NatsServer::start_with_config(
        "authorization { users: [ { user: \"app\", password: \"s3cret\" } ] }",
    )
    .await
    .expect("nats-server");
    delivers(fast_builder([server.url()]).user_and_password("app", "s3cret")).await;
    let error = fails_fast(
        fast_builder([server.url()]).user_and_password("app", "wrong"),
        &["authorization violation"],
    )
    .await;
    assert!(
        !format!("{error:?}").contains("wrong"),
        "the password leaks: {error:?}"
    );
    // In the URL, masked in the medium's name.
    let in_url = server.url().replace("nats://", "nats://app:s3cret@");
    let adapter = fast_builder([in_url.as_str()]).build().unwrap();
    assert!(!adapter.medium().contains("s3cret"), "{}", adapter.medium());
    delivers(fast_builder([in_url])).await;
}

#[tokio::test]
async fn token() {
    let server = NatsServer::start_with_config("authorization { token: \"t0ken\" }")
        .await
        .expect("nats-server");
    delivers(fast_builder([server.url()]).token("t0ken")).await;
    fails_fast(
        fast_builder([server.url()]).token("not-it"),
        &["authorization violation"],
    )
    .await;
    // No credential at all.
    fails_fast(fast_builder([server.url()]), &["authorization violation"]).await;
    // A token in the URL works too, and is masked in the medium's name.
    let in_url = server.url().replace("nats://", "nats://t0ken@");
    let adapter = fast_builder([in_url.as_str()]).build().unwrap();
    assert!(!adapter.medium().contains("t0ken"), "{}", adapter.medium());
    delivers(fast_builder([in_url])).await;
}

/// An NKey user: the server knows the public key, the adapter signs the
/// server's nonce with the seed.
#[cfg(feature = "nkeys")]
#[tokio::test]
async fn nkey() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users: [ {{ nkey: \"{}\" }} ] }}",
        user.public_key()
    ))
    .await
    .expect("nats-server");
    let builder = fast_builder([server.url()]).nkey(user.seed().unwrap());
    assert!(
        !format!("{builder:?}").contains("SU"),
        "the seed leaks: {builder:?}"
    );
    delivers(builder).await;
    fails_fast(
        fast_builder([server.url()]).nkey(nkeys::KeyPair::new_user().seed().unwrap()),
        &["authorization violation"],
    )
    .await;
}

/// A `.creds` file: the server runs in operator mode (an operator, an
/// account it signed, preloaded in a memory resolver), the file holds a
/// user JWT the account signed and the user's seed.
#[cfg(feature = "nkeys")]
#[tokio::test]
async fn creds_file() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "operator",
        serde_json::json!({ "type": "operator", "version": 2 }),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "rooms",
        serde_json::json!({
            "type": "account",
            "version": 2,
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1
            }
        }),
    );
    let server = NatsServer::start_with_config(&format!(
        "operator: \"{operator_jwt}\"\nresolver: MEMORY\n\
         resolver_preload: {{ {}: \"{account_jwt}\" }}\n",
        account.public_key()
    ))
    .await
    .expect("nats-server in operator mode");
    let dir = tempdir("creds");
    let good = dir.join("app.creds");
    std::fs::write(&good, creds(&account, &account)).unwrap();
    delivers(fast_builder([server.url()]).credentials_file(&good)).await;
    // A user signed by an account the operator never signed.
    let stranger = nkeys::KeyPair::new_account();
    let bad = dir.join("stranger.creds");
    std::fs::write(&bad, creds(&stranger, &stranger)).unwrap();
    fails_fast(
        fast_builder([server.url()]).credentials_file(&bad),
        &["authorization violation"],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);

    /// A `.creds` file of a new user signed by `signer` (in `account`).
    fn creds(signer: &nkeys::KeyPair, account: &nkeys::KeyPair) -> String {
        let user = nkeys::KeyPair::new_user();
        let user_jwt = jwt(
            signer,
            &user.public_key(),
            "app",
            serde_json::json!({
                "type": "user", "version": 2, "issuer_account": account.public_key(),
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1
            }),
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
    }
}

/// A NATS JWT (`ed25519-nkey`) for `subject`, issued and signed by
/// `issuer`, with `nats` as its `nats` claims.
#[cfg(feature = "nkeys")]
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{subject}{now}"),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(feature = "nkeys")]
fn tempdir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rooms-nats-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The server's TLS block: its certificate from `certs`, and with
/// `verify` client certificates checked against the CA.
fn tls_config(certs: &TestCerts, verify: bool) -> String {
    let verify = if verify {
        format!("\n  ca_file: \"{}\"\n  verify: true", certs.ca().display())
    } else {
        String::new()
    };
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"{verify}\n}}\n",
        certs.server_cert().display(),
        certs.server_key().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verified_against_a_generated_ca() {
    let certs = TestCerts::generate().unwrap();
    let server = NatsServer::start_with_config(&tls_config(&certs, false))
        .await
        .expect("nats-server with TLS");
    let url = server.url().replace("nats://", "tls://");
    delivers(fast_builder([url.as_str()]).tls_root_certificates(certs.ca())).await;
    // `require_tls` with a nats:// URL does the same.
    delivers(
        fast_builder([server.url()])
            .require_tls(true)
            .tls_root_certificates(certs.ca()),
    )
    .await;
    // A CA that did not sign the server's certificate, or none at all.
    fails_fast(
        fast_builder([url.as_str()]).tls_root_certificates(certs.other_ca()),
        &["TLS", "not trusted"],
    )
    .await;
    fails_fast(fast_builder([url.as_str()]), &["TLS", "not trusted"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_the_server_verifies() {
    let certs = TestCerts::generate().unwrap();
    let server = NatsServer::start_with_config(&tls_config(&certs, true))
        .await
        .expect("nats-server with verify: true");
    let url = server.url().replace("nats://", "tls://");
    let (cert, key) = certs.client("app").unwrap();
    delivers(
        fast_builder([url.as_str()])
            .tls_root_certificates(certs.ca())
            .tls_client_certificate(&cert, &key),
    )
    .await;
    // No client certificate, or one of a CA the server does not trust.
    fails_fast(
        fast_builder([url.as_str()]).tls_root_certificates(certs.ca()),
        &["TLS", "refused the handshake", "client certificate"],
    )
    .await;
    let (cert, key) = certs.untrusted_client("app").unwrap();
    fails_fast(
        fast_builder([url.as_str()])
            .tls_root_certificates(certs.ca())
            .tls_client_certificate(&cert, &key),
        &["TLS", "refused the handshake"],
    )
    .await;
}

#[tokio::test]
async fn tls_required_of_a_server_without_it() {
    let certs = TestCerts::generate().unwrap();
    let server = NatsServer::start().await.expect("nats-server");
    fails_fast(
        fast_builder([server.url()])
            .require_tls(true)
            .tls_root_certificates(certs.ca()),
        &["TLS", "does the server speak TLS"],
    )
    .await;
}

#[test]
fn unreadable_tls_files_are_named_by_build() {
    let certs = TestCerts::generate().unwrap();
    let missing = certs.dir().join("missing.pem");
    let error = fast_builder(["tls://127.0.0.1:4222"])
        .tls_root_certificates(&missing)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let error = fast_builder(["tls://127.0.0.1:4222"])
        .tls_client_certificate(certs.server_cert(), &missing)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    // A key where a certificate belongs, and the other way round.
    let error = fast_builder(["tls://127.0.0.1:4222"])
        .tls_root_certificates(certs.server_key())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("server.key"), "{error}");
    let error = fast_builder(["tls://127.0.0.1:4222"])
        .tls_client_certificate(certs.server_cert(), certs.server_cert())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("PRIVATE KEY"), "{error}");
    fast_builder(["tls://127.0.0.1:4222"])
        .tls_root_certificates(certs.ca())
        .tls_client_certificate(certs.server_cert(), certs.server_key())
        .build()
        .unwrap();
}
