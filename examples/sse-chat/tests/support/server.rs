//! A running `sse-chat` process, and its HTTP API as the tests use it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rooms_testkit::poll::eventually;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::DEADLINE;
use super::metrics::Metrics;

/// A running `sse-chat` process, killed when dropped.
pub struct ChatServer {
    pub base: String,
    pub port: u16,
    pub(super) child: Child,
    pub(super) log: Arc<Mutex<String>>,
    pub(super) name: String,
}

impl ChatServer {
    /// Starts the binary on a free port (`--port 0`) with a 1 s keep-alive and
    /// waits for its "listening" line.
    pub async fn start(name: &str, extra_args: &[&str]) -> ChatServer {
        Self::start_on(name, 0, extra_args).await
    }

    /// Like [`start`](Self::start), on this port (0: a free one), e.g. to
    /// restart a killed node where its clients reconnect.
    pub async fn start_on(name: &str, port: u16, extra_args: &[&str]) -> ChatServer {
        let port = port.to_string();
        let mut args = vec!["--port", &port, "--keep-alive-secs", "1", "--node-id", name];
        args.extend_from_slice(extra_args);
        let mut child = Self::command(&args)
            .spawn()
            .expect("spawn the sse-chat binary");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(DEADLINE, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.starts_with("sse-chat listening on http://") => {
                        return line;
                    }
                    Ok(Some(_)) => continue,
                    _ => panic!(
                        "sse-chat {name} exited before listening; its log:\n{}",
                        log.lock().unwrap()
                    ),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("sse-chat {name} did not start within {DEADLINE:?}"));
        // Keep draining stdout so the child can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = line.trim_start_matches("sse-chat listening on ").to_owned();
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        ChatServer {
            base,
            port,
            child,
            log,
            name: name.to_owned(),
        }
    }

    /// The binary with the given arguments, with stdout and stderr piped and
    /// no Redis deployment inherited from the environment.
    pub fn command(args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sse-chat"));
        command
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER")
            .env_remove("REDIS_SENTINEL")
            .env_remove("REDIS_SENTINEL_MASTER")
            .env_remove("SSE_CHAT_PORT")
            .env_remove("SSE_CHAT_HOST")
            .env("RUST_LOG", "sse_chat=debug,rooms_adapter=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Local member count of `room`, per `GET /rooms`.
    pub async fn members(&self, http: &reqwest::Client, room: &str) -> usize {
        let (_, body) = self.get_json(http, "/rooms").await;
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["room"] == room)
            .map_or(0, |entry| entry["members"].as_u64().unwrap() as usize)
    }

    /// Waits until `room` has `count` local members.
    pub async fn wait_members(&self, http: &reqwest::Client, room: &str, count: usize) {
        eventually(
            &format!("{count} members in room {room:?} on {}", self.name),
            DEADLINE,
            || async { (self.members(http, room).await == count).then_some(()) },
        )
        .await;
    }

    /// POSTs a chat message; returns the status and the JSON answer.
    pub async fn post(&self, http: &reqwest::Client, room: &str, body: &Value) -> (u16, Value) {
        let response = http
            .post(self.url(&format!("/rooms/{room}/messages")))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// GET `/metrics`, parsed as the Prometheus text format; every line
    /// must be a comment or a sample the parser understands.
    pub async fn scrape(&self, http: &reqwest::Client) -> Metrics {
        let response = http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Metrics::parse(&response.text().await.unwrap())
    }

    /// GET `/metrics` as text, unchecked.
    pub async fn metrics_text(&self, http: &reqwest::Client) -> String {
        http.get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET `path`: the status and the JSON answer.
    pub async fn get_json(&self, http: &reqwest::Client, path: &str) -> (u16, Value) {
        let response = http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Kills the process with SIGKILL, by its pid (it cannot say goodbye to
    /// anyone), and waits until it is gone.
    #[cfg(unix)]
    pub async fn kill_hard(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL failed");
        timeout(DEADLINE, self.child.wait())
            .await
            .expect("sse-chat dies after SIGKILL")
            .unwrap();
    }

    /// Sends SIGTERM and waits for the exit code.
    #[cfg(unix)]
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        timeout(DEADLINE, self.child.wait())
            .await
            .expect("sse-chat exits after SIGTERM")
            .unwrap()
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of sse-chat {} ----\n{}",
                self.name,
                self.log.lock().map(|log| log.clone()).unwrap_or_default()
            );
        }
    }
}
