//! Bad input gets a 4xx JSON error naming the field.

use serde_json::{Value, json};

use crate::support::{ChatServer, http};

#[tokio::test]
async fn invalid_input_gets_a_4xx_json_error_naming_the_field() {
    let server = ChatServer::start("mem-val", &[]).await;
    let http = http();
    let url = server.url("/rooms/lobby/messages");
    let long_room = "r".repeat(65);

    let cases: Vec<(reqwest::RequestBuilder, u16, Option<&str>, &str)> = vec![
        (
            http.post(&url).json(&json!({"name": "ada", "text": "   "})),
            422,
            Some("text"),
            "text must not be empty",
        ),
        (
            http.post(&url).json(&json!({"name": "ada"})),
            422,
            Some("text"),
            "text is required",
        ),
        (
            http.post(&url).json(&json!({"name": "ada", "text": 3})),
            422,
            Some("text"),
            "text must be a string",
        ),
        (
            http.post(&url)
                .json(&json!({"name": "ada", "text": "x".repeat(2001)})),
            422,
            Some("text"),
            "at most 2000",
        ),
        (
            http.post(&url).json(&json!({"name": "", "text": "hi"})),
            422,
            Some("name"),
            "name must not be empty",
        ),
        (
            http.post(&url)
                .json(&json!({"name": "n".repeat(33), "text": "hi"})),
            422,
            Some("name"),
            "at most 32",
        ),
        (
            http.post(&url).json(&json!(["not", "an", "object"])),
            400,
            Some("body"),
            "JSON object",
        ),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
            Some("body"),
            "not valid JSON",
        ),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 20_000]),
            413,
            Some("body"),
            "at most 16384 bytes",
        ),
        (
            http.post(&url).body("name=ada&text=hi"),
            415,
            Some("Content-Type"),
            "application/json",
        ),
        (
            http.post(server.url(&format!("/rooms/{long_room}/messages")))
                .json(&json!({"name": "a", "text": "b"})),
            422,
            Some("room"),
            "at most 64 characters",
        ),
        (
            http.post(server.url("/rooms/a%0Ab/messages"))
                .json(&json!({"name": "a", "text": "b"})),
            422,
            Some("room"),
            "control characters",
        ),
        (
            http.get(server.url("/rooms/%20lobby/events")),
            422,
            Some("room"),
            "whitespace",
        ),
        (
            http.get(server.url("/no/such/thing")),
            404,
            None,
            "no such endpoint",
        ),
    ];
    for (request, status, field, needle) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{needle}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{needle}: JSON error body"
        );
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{error:?} should contain {needle:?}"
        );
        assert_eq!(body["field"].as_str(), field, "{body}");
    }

    server.scrape(&http).await.assert_lines(&[
        "sse_chat_messages_posted_total 0",
        "sse_chat_messages_rejected_total 12",
    ]);
}
