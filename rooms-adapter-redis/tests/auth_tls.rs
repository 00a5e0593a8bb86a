//! ACL users in the URL (`redis://user:password@host`) and TLS (`rediss://`,
//! feature `tls`; the test needs `tls-insecure` for its self-signed
//! certificate) against a real redis-server.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use rooms_adapter::adapter::{EventSink, RoomAdapter};
use rooms_adapter::{Envelope, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::RedisAdapter;
use rooms_testkit::redis_server::RedisServer;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_in_the_url_and_a_wrong_password() {
    let server =
        RedisServer::start_with_args(&["--user", "alice", "on", ">s3cret", "~*", "&*", "+@all"])
            .await
            .expect("redis-server with an ACL user");
    let port = server.port();

    let url = format!("redis://alice:s3cret@127.0.0.1:{port}");
    let (adapter, mut events) = connected(&url, "acl-node", |b| b).await;
    let room = RoomName::from("private");
    adapter.subscribe(&room).await.expect("subscribe as alice");
    adapter
        .publish(
            &room,
            &Envelope::new(NodeId::from("acl-node"), SseMessage::new("hi")),
        )
        .await
        .expect("publish as alice");
    let (got, envelope) = next_message(&mut events).await;
    assert_eq!(got, room);
    assert_eq!(envelope.message().data, "hi");
    let clients = server.command("CLIENT LIST").await.expect("client list");
    assert!(clients.contains("user=alice"), "{clients}");
    adapter.disconnect().await.expect("disconnect");

    let bad = RedisAdapter::builder(format!("redis://alice:wrong@127.0.0.1:{port}"))
        .build()
        .expect("config");
    let (sink, _events) = EventSink::bounded(8);
    let error = bad
        .connect(NodeId::from("n"), sink)
        .await
        .expect_err("wrong password");
    assert!(!error.is_retryable(), "{error:?}");
    assert!(!error.to_string().contains("wrong"), "password in {error}");
    println!("wrong password: {error}");
}

#[cfg(feature = "tls-insecure")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_url_over_tls() {
    use rooms_adapter::sequence::EventIdSequence;
    use rooms_adapter_redis::RedisEventIdSequence;

    let dir = std::env::temp_dir().join(format!("rooms-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED rediss_url_over_tls: `openssl` (to make a test certificate) is not installed"
        );
        return;
    }
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let tls_port = rooms_testkit::redis_server::free_port()
        .expect("port")
        .to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ])
    .await
    .expect("redis-server with TLS");

    // Self-signed: skip verification (`#insecure`), as redis-rs allows.
    let url = format!("rediss://127.0.0.1:{tls_port}/#insecure");
    let (adapter, mut events) = connected(&url, "tls-node", |b| b).await;
    let room = RoomName::from("secure");
    adapter.subscribe(&room).await.expect("subscribe over TLS");
    adapter
        .publish(
            &room,
            &Envelope::new(NodeId::from("tls-node"), SseMessage::new("sealed")),
        )
        .await
        .expect("publish over TLS");
    let (_, envelope) = next_message(&mut events).await;
    assert_eq!(envelope.message().data, "sealed");
    let ids = RedisEventIdSequence::connect(&url, "tls:ids")
        .await
        .expect("sequence over TLS");
    assert_eq!(ids.next_id().await.expect("id"), "0-000000000001");
    adapter.disconnect().await.expect("disconnect");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
