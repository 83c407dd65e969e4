//! A real browser for the dashboard's tests: Debian's `chromium`, headless,
//! driven through `chromedriver` (WebDriver) with fantoccini. Each
//! [`Browser`] runs its own chromedriver on a free loopback port and its
//! own empty profile directory; both go when it is dropped.
//!
//! `scripts/install-test-deps` installs `chromium` and `chromium-driver`.
//! Screenshots go to `target/tmp/screenshots/<name>.png`, kept after the
//! run (a few are copied into `docs/` for the README).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::{Cluster, DEADLINE};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags chromium needs to run headless as root in a container, talking
/// to nothing but the page it is given.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--window-size=1280,900",
];

pub struct Browser {
    pub client: Client,
    /// The API the pages come from (`http://127.0.0.1:…`).
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends chromedriver and every chromium it started: they share the
    /// process group chromedriver leads (killing chromedriver alone left
    /// the browsers running, and enough of them exhaust the inotify
    /// instances every `systemd --user` manager of the other tests needs).
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless chromium session for the pages
    /// of `cluster`'s API (started already); chromedriver logs beside the
    /// cluster's processes.
    pub async fn start(cluster: &Cluster) -> Browser {
        let port = free_port();
        let log = std::fs::File::create(cluster.path("logs").join("chromedriver.log")).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chromedriver runs (scripts/install-test-deps installs chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Browser {
            client,
            base: cluster.api_url.clone(),
            driver,
            _profile: profile,
        }
    }

    /// Opens the API's page at `path` (`/ui/operations`).
    pub async fn visit(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client.goto(&url).await.expect("the page loads");
    }

    /// The path of the page shown now.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("a page");
        url.path().to_owned()
    }

    /// The element `css` selects, once it is there.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css:?} on the page: {e}"))
    }

    /// Whether `css` selects anything right now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("a query")
            .is_empty()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("its text")
    }

    /// Clicks what `css` selects, once it is there.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("a click");
    }

    /// Replaces the text of the field `css` selects with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("the field clears");
        field.send_keys(text).await.expect("the keys are typed");
    }

    /// The value of the field `css` selects.
    pub async fn value(&self, css: &str) -> Option<String> {
        self.find(css).await.prop("value").await.expect("its value")
    }

    /// Waits until the text of `css` satisfies `check`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let elements = self.client.find_all(Locator::Css(css)).await.unwrap();
            if let Some(element) = elements.first()
                && let Ok(text) = element.text().await
                && check(&text)
            {
                return text;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("the script runs")
    }

    /// Waits until `script` returns `true` in the page.
    pub async fn wait_until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.eval(script).await != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the live indicator says the event stream is connected.
    pub async fn wait_live(&self) {
        self.wait_until(
            "return document.getElementById('live').dataset.state === 'on';",
            "the event stream connects",
        )
        .await;
    }

    /// Marks the page, so [`Browser::not_reloaded`] can tell it was not
    /// loaded again since.
    pub async fn mark_page(&self) {
        self.eval("window.__notReloaded = true; return true;").await;
    }

    pub async fn not_reloaded(&self) -> bool {
        self.eval("return window.__notReloaded === true;").await == json!(true)
    }

    /// Types `key` into the sign-in form and sends it.
    pub async fn submit_key(&self, key: &str) {
        self.find("#key").await.send_keys(key).await.unwrap();
        self.click("form button[type=submit]").await;
    }

    /// Signs in with `key` through the sign-in form.
    pub async fn sign_in(&self, key: &str) {
        self.visit("/ui").await;
        self.submit_key(key).await;
        self.find("main#content").await;
    }

    /// The session's CSRF token, as the page carries it.
    pub async fn csrf_token(&self) -> String {
        let token = self
            .eval("return document.querySelector('meta[name=csrf-token]').content;")
            .await;
        token.as_str().expect("a CSRF token").to_owned()
    }

    /// The session cookie's value.
    pub async fn session_cookie(&self) -> String {
        self.client
            .get_named_cookie("opsqueue_session")
            .await
            .expect("a session cookie")
            .value()
            .to_owned()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("the window resizes");
    }

    /// Saves the page as `target/tmp/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Where screenshots are kept: the target directory's `tmp/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
        .map(|target| target.join("tmp").join("screenshots"))
        .unwrap_or_else(|| std::env::temp_dir().join("opsqueue-screenshots"))
}
