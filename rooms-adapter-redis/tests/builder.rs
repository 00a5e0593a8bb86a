//! Builder validation: every bad input is named in the error.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter_redis::RedisAdapter;

fn config_error(result: Result<RedisAdapter, Error>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("not a config error: {other:?}"),
        Ok(adapter) => panic!("accepted: {adapter:?}"),
    }
}

#[test]
fn bad_urls_are_named_with_the_reason_and_no_password() {
    let message = config_error(RedisAdapter::builder("http://127.0.0.1:6379").build());
    assert!(message.contains("\"http://127.0.0.1:6379\""), "{message}");
    assert!(message.contains("unsupported scheme"), "{message}");

    let message = config_error(RedisAdapter::builder("127.0.0.1:6379").build());
    assert!(
        message.contains("127.0.0.1:6379") && message.contains("missing scheme"),
        "{message}"
    );

    let message = config_error(RedisAdapter::builder("redis://user:hunter2@host:notaport").build());
    assert!(
        message.contains("redis://user:***@host:notaport"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "password leaked: {message}");

    #[cfg(not(feature = "tls"))]
    {
        let message = config_error(RedisAdapter::builder("rediss://127.0.0.1").build());
        assert!(message.contains("`tls` feature"), "{message}");
    }
}

#[test]
fn good_urls_are_accepted() {
    for url in [
        "redis://127.0.0.1",
        "redis://127.0.0.1:6380/2",
        "redis://user:password@127.0.0.1:6379",
        "redis://:password@localhost",
        "redis+unix:///tmp/redis.sock",
    ] {
        let adapter = RedisAdapter::builder(url).build();
        assert!(adapter.is_ok(), "{url}: {adapter:?}");
    }
    #[cfg(feature = "tls")]
    assert!(RedisAdapter::builder("rediss://127.0.0.1").build().is_ok());
}

#[test]
fn zero_and_inverted_values_are_named() {
    let url = "redis://127.0.0.1";
    let cases: Vec<(&str, Result<RedisAdapter, Error>)> = vec![
        (
            "connect_timeout",
            RedisAdapter::builder(url)
                .connect_timeout(Duration::ZERO)
                .build(),
        ),
        (
            "subscribe_timeout",
            RedisAdapter::builder(url)
                .subscribe_timeout(Duration::ZERO)
                .build(),
        ),
        (
            "publish_timeout",
            RedisAdapter::builder(url)
                .publish_timeout(Duration::ZERO)
                .build(),
        ),
        (
            "ping interval",
            RedisAdapter::builder(url)
                .ping(Duration::ZERO, Duration::from_secs(1))
                .build(),
        ),
        (
            "ping timeout",
            RedisAdapter::builder(url)
                .ping(Duration::from_secs(1), Duration::ZERO)
                .build(),
        ),
        (
            "reconnect_backoff min",
            RedisAdapter::builder(url)
                .reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))
                .build(),
        ),
        (
            "max_payload_bytes",
            RedisAdapter::builder(url).max_payload_bytes(0).build(),
        ),
        (
            "subscribe_batch",
            RedisAdapter::builder(url).subscribe_batch(0).build(),
        ),
        (
            "publish_batch",
            RedisAdapter::builder(url).publish_batch(0).build(),
        ),
        (
            "publish_queue_capacity",
            RedisAdapter::builder(url).publish_queue_capacity(0).build(),
        ),
        (
            "pipelines_in_flight",
            RedisAdapter::builder(url).pipelines_in_flight(0).build(),
        ),
        #[cfg(feature = "deadpool")]
        (
            "deadpool_driver pool_size",
            RedisAdapter::builder(url).deadpool_driver(0).build(),
        ),
        #[cfg(feature = "bb8")]
        (
            "bb8_driver pool_size",
            RedisAdapter::builder(url).bb8_driver(0).build(),
        ),
    ];
    for (name, result) in cases {
        let message = config_error(result);
        assert!(message.contains(name), "{name}: {message}");
    }
    let message = config_error(
        RedisAdapter::builder(url)
            .unsubscribe_delay(Duration::MAX)
            .build(),
    );
    assert!(
        message.contains("unsubscribe_delay must be at most"),
        "{message}"
    );
    let message = config_error(
        RedisAdapter::builder(url)
            .ping(Duration::MAX, Duration::MAX)
            .build(),
    );
    assert!(
        message.contains("ping interval must be at most"),
        "{message}"
    );
    // Sizes have upper bounds too, named with the value.
    let message = config_error(
        RedisAdapter::builder(url)
            .publish_queue_capacity(usize::MAX)
            .build(),
    );
    assert!(
        message.contains("publish_queue_capacity must be at most")
            && message.contains(&usize::MAX.to_string()),
        "{message}"
    );
    let message = config_error(
        RedisAdapter::builder(url)
            .max_payload_bytes(usize::MAX)
            .build(),
    );
    assert!(message.contains("max_payload_bytes"), "{message}");
    // A zero unsubscribe delay is allowed: unsubscribe at once.
    assert!(
        RedisAdapter::builder(url)
            .unsubscribe_delay(Duration::ZERO)
            .build()
            .is_ok()
    );
}

#[test]
fn defaults_match_the_typescript_package() {
    let adapter = RedisAdapter::builder("redis://127.0.0.1")
        .build()
        .expect("valid");
    let config = adapter.config();
    assert_eq!(config.channel_prefix(), "sse:room:");
    assert_eq!(config.codec(), rooms_adapter::Codec::Json);
    assert_eq!(adapter.medium(), "redis at 127.0.0.1:6379");
}

#[test]
fn builders_debug_output_masks_passwords() {
    let builder = RedisAdapter::builder("redis://ada:hun/ter2@cache:6379/0?password=hunter3");
    for shown in [format!("{builder:?}"), format!("{builder:#?}")] {
        assert!(
            shown.contains("redis://ada:***@cache:6379/0?password=***"),
            "{shown}"
        );
        assert!(!shown.contains("hun") && !shown.contains("ter2"), "{shown}");
    }
    let adapter = RedisAdapter::builder("redis://ada:hunter2@cache:6379/0")
        .build()
        .unwrap();
    let shown = format!("{adapter:?}");
    assert!(!shown.contains("hunter2"), "{shown}");

    #[cfg(feature = "cluster")]
    {
        let builder = rooms_adapter_redis::RedisAdapter::cluster([
            "redis://:hunter2@node-1:7000",
            "redis://hunter2@node-2:7001",
        ]);
        let shown = format!("{builder:?}");
        assert!(
            shown.contains("redis://:***@node-1:7000") && shown.contains("redis://***@node-2:7001"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
