//! The cluster queries and flags on one memory node.

use serde_json::{Value, json};

use crate::support::{ChatServer, DEADLINE, SseClient, http};

#[tokio::test]
async fn the_cluster_of_one_memory_node_is_that_node() {
    let server = ChatServer::start(
        "mem-cluster",
        &[
            "--heartbeat-interval-ms",
            "200",
            "--query-timeout-ms",
            "500",
        ],
    )
    .await;
    let http = http();
    let get = |path: &str| {
        let request = http.get(server.url(path));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let mut clients = Vec::new();
    for room in ["lobby", "lobby", "side"] {
        let mut client =
            SseClient::open(&http, &server.url(&format!("/rooms/{room}/events"))).await;
        client.next_of("ready").await;
        clients.push(client);
    }
    server.wait_members(&http, "lobby", 2).await;

    let (status, nodes) = get("/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes["node"], "mem-cluster");
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{nodes}");
    assert_eq!(list[0]["id"], "mem-cluster");
    assert_eq!(list[0]["self"], true);
    assert_eq!(list[0]["connections"], 3);
    assert_eq!(list[0]["rooms"], 2);
    assert_eq!(list[0]["lastHeardMs"], 0);

    let (status, cluster) = get("/rooms?scope=cluster").await;
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["scope"], "cluster");
    assert_eq!(
        cluster["rooms"],
        json!([{"room": "lobby", "members": 2}, {"room": "side", "members": 1}])
    );
    assert_eq!(
        (&cluster["nodes"], &cluster["known"], &cluster["complete"]),
        (&json!(1), &json!(1), &json!(true)),
        "{cluster}"
    );
    assert_eq!(cluster["missing"], json!([]));

    // The local answer is what it always was, with or without scope=local.
    let (_, plain) = get("/rooms").await;
    let (_, local) = get("/rooms?scope=local").await;
    assert_eq!(plain, local);
    assert_eq!(
        plain,
        json!({"node": "mem-cluster", "backend": "memory", "rooms": [
            {"room": "lobby", "members": 2}, {"room": "side", "members": 1}
        ]})
    );

    let (status, members) = get("/rooms/lobby/members?scope=cluster").await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["room"], "lobby");
    assert_eq!(members["members"], 2);
    assert_eq!(
        (&members["nodes"], &members["known"], &members["complete"]),
        (&json!(1), &json!(1), &json!(true)),
        "{members}"
    );
    let (status, members) = get("/rooms/nobody/members").await;
    assert_eq!(
        (status, &members["scope"], &members["members"]),
        (200, &json!("local"), &json!(0))
    );

    // A bad scope is a 400 naming the field and the accepted values.
    for path in ["/rooms?scope=global", "/rooms/lobby/members?scope=CLUSTER"] {
        let (status, error) = get(path).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["field"], "scope", "{error}");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains(r#"scope must be "local" or "cluster""#),
            "{error}"
        );
    }

    server.scrape(&http).await.assert_lines(&[
        "rooms_cluster_nodes 1",
        "rooms_queries_answered_total 0",
        "rooms_control_rejected_total 0",
        "rooms_control_unsent_total 0",
    ]);
}

#[tokio::test]
async fn cluster_timing_flags_are_checked_at_start_up() {
    let output = tokio::time::timeout(
        DEADLINE,
        ChatServer::command(&[
            "--port",
            "0",
            "--heartbeat-interval-ms",
            "500",
            "--node-expiry-ms",
            "400",
        ])
        .output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--node-expiry-ms (400) must be longer than --heartbeat-interval-ms (500)"),
        "{stderr}"
    );
}
