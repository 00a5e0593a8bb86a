//! Headless Chromium driven through chromedriver with fantoccini.
//!
//! If Chromium or chromedriver is missing, [`Browser::launch`] prints a loud
//! `SKIPPED:` line and returns `None`, unless `ROOMS_REQUIRE_BROWSER` is set,
//! in which case it panics (CI installs them and sets it).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

use super::{DEADLINE, eventually, target_dir};

const INSTALL: &str = "apt-get install chromium chromium-driver \
     (or set CHROME_BIN and CHROMEDRIVER to their paths)";

/// Chromium's flags for a quiet, hermetic headless run.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
    "--lang=en-US",
];

/// A chromedriver process; killed when dropped.
pub struct Browser {
    chromium: PathBuf,
    url: String,
    driver: Child,
    profiles: Vec<PathBuf>,
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn from_env_or_path(var: &str, names: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        _ => find_in_path(names),
    }
}

fn skip(reason: &str) {
    let message = format!("browser test cannot run: {reason}; install with: {INSTALL}");
    if std::env::var_os("ROOMS_REQUIRE_BROWSER").is_some() {
        panic!("{message} (ROOMS_REQUIRE_BROWSER is set, so this is a failure)");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of
    // passing tests, and this must be seen.
    let bar = "*".repeat(78);
    let _ = writeln!(std::io::stderr(), "\n{bar}\nSKIPPED: {message}\n{bar}\n");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver on a free port, or returns `None` (after printing
    /// `SKIPPED: ...`) when Chromium or chromedriver is not installed.
    pub async fn launch() -> Option<Browser> {
        let Some(chromium) = from_env_or_path(
            "CHROME_BIN",
            &[
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ],
        ) else {
            skip("no chromium binary found");
            return None;
        };
        let Some(chromedriver) = from_env_or_path("CHROMEDRIVER", &["chromedriver"]) else {
            skip("no chromedriver binary found");
            return None;
        };
        let http = super::http();
        // A free port can be taken between probing and binding: retry.
        for attempt in 1..=3 {
            let port = free_port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", chromedriver.display()));
            let url = format!("http://127.0.0.1:{port}");
            let status_url = format!("{url}/status");
            // `Some(true)`: ready; `Some(false)`: exited (the port was taken).
            let ready = eventually(
                &format!("chromedriver on port {port} to become ready"),
                DEADLINE,
                || {
                    let exited = matches!(driver.try_wait(), Ok(Some(_)));
                    let status = (!exited).then(|| http.get(&status_url).send());
                    async move {
                        let Some(status) = status else {
                            return Some(false);
                        };
                        let body = status.await.ok()?.json::<serde_json::Value>().await.ok()?;
                        (body["value"]["ready"] == true).then_some(true)
                    }
                },
            )
            .await;
            if ready {
                return Some(Browser {
                    chromium,
                    url,
                    driver,
                    profiles: Vec::new(),
                });
            }
            assert!(
                attempt < 3,
                "chromedriver on port {port} exited before it became ready"
            );
        }
        unreachable!()
    }

    /// A new browser session with a fresh profile directory.
    pub async fn session(&mut self) -> Client {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let profile = target_dir().join("e2e-browser").join(format!(
            "profile-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        self.profiles.push(profile.clone());

        let mut args: Vec<String> = CHROMIUM_FLAGS
            .iter()
            .map(|flag| (*flag).to_owned())
            .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({"binary": self.chromium, "args": args}),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot open a Chromium session ({}) through chromedriver: {error}",
                    self.chromium.display()
                )
            })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
        for profile in &self.profiles {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// The text of an element, by CSS selector.
pub async fn text_of(client: &Client, css: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// Waits until the element's text equals `expected`.
pub async fn wait_text(client: &Client, css: &str, expected: &str) {
    eventually(&format!("{css} to read {expected:?}"), DEADLINE, || async {
        (text_of(client, css).await.as_deref() == Some(expected)).then_some(())
    })
    .await;
}

/// Texts of all elements matching `css`.
pub async fn texts(client: &Client, css: &str) -> Vec<String> {
    let Ok(elements) = client.find_all(Locator::Css(css)).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for element in elements {
        if let Ok(text) = element.text().await {
            out.push(text);
        }
    }
    out
}

/// Waits until some element matching `css` has exactly `expected` as text.
pub async fn wait_for_text_among(client: &Client, css: &str, expected: &str) {
    eventually(
        &format!("an element {css} reading {expected:?}"),
        DEADLINE,
        || async {
            texts(client, css)
                .await
                .iter()
                .any(|text| text == expected)
                .then_some(())
        },
    )
    .await;
}

/// Saves a screenshot PNG under `{target}/e2e-screenshots/` and returns its path.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = target_dir().join("e2e-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot saved: {}", path.display());
    path
}
