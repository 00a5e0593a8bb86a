//! Resuming from `Last-Event-ID`, with and without history.

use serde_json::json;

use crate::support::{ChatServer, SseClient, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_gets_what_it_missed_in_order() {
    let server = ChatServer::start("mem-history", &["--history-len", "5"]).await;
    let http = http();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (status, answer) = server
            .post(
                &http,
                "story",
                &json!({"name": "Ann", "text": format!("part {n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| id.starts_with("h1.")), "{ids:?}");

    // The header, as an EventSource reconnect sends it.
    let mut returning = SseClient::open_with(
        http.get(server.url("/rooms/story/events"))
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    let ready = returning.next_of("ready").await;
    assert_eq!(
        ready.json()["resume"],
        json!({"kind": "replayed", "messages": 2})
    );
    for (n, id) in [(2, &ids[1]), (3, &ids[2])] {
        let message = returning.next().await;
        assert_eq!(message.event, "message");
        assert_eq!(message.id.as_deref(), Some(id.as_str()));
        assert_eq!(message.json()["text"], format!("part {n}"));
    }
    let (_, live) = server
        .post(&http, "story", &json!({"name": "Ann", "text": "live"}))
        .await;
    let message = returning.next().await;
    assert_eq!(message.json()["text"], "live");
    assert_eq!(message.id.as_deref(), live["id"].as_str());

    // The query parameter, as a reloaded page sends it; from the latest id
    // nothing is replayed.
    let latest = live["id"].as_str().unwrap();
    let mut reloaded = SseClient::open(
        &http,
        &server.url(&format!("/rooms/story/events?lastEventId={latest}")),
    )
    .await;
    let ready = reloaded.next_of("ready").await;
    assert_eq!(
        ready.json()["resume"],
        json!({"kind": "replayed", "messages": 0})
    );

    // Trimmed away (5 kept: 3 to 7): a gap event first.
    for n in 5..=7 {
        server
            .post(
                &http,
                "story",
                &json!({"name": "Ann", "text": format!("part {n}")}),
            )
            .await;
    }
    let mut late = SseClient::open_with(
        http.get(server.url("/rooms/story/events"))
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    assert_eq!(late.next_of("ready").await.json()["resume"]["kind"], "gap");
    let gap = late.next().await;
    assert_eq!(
        (gap.event.as_str(), gap.json()["reason"].as_str()),
        ("gap", Some("trimmed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_ids_are_random_and_nothing_is_replayed() {
    let server = ChatServer::start("mem-no-history", &["--history-len", "0"]).await;
    let http = http();
    let (_, answer) = server
        .post(&http, "quiet", &json!({"name": "Ann", "text": "one"}))
        .await;
    let id = answer["id"].as_str().unwrap().to_owned();
    assert!(!id.starts_with("h1."), "{id}");
    let mut client = SseClient::open_with(
        http.get(server.url("/rooms/quiet/events"))
            .header("Last-Event-ID", "anything"),
    )
    .await;
    let ready = client.next_of("ready").await;
    assert_eq!(ready.json()["history"], false);
    assert_eq!(ready.json()["resume"]["kind"], "live");
}
