//! What a person sees: `opsqueue run … --follow` in a real terminal (a
//! tmux pane, 120×30), read back with `capture-pane` like a screenshot.
//! And what a pipe gets: no ANSI escape codes at all.
//!
//! tmux comes from `scripts/install-test-deps`. Each test runs its own
//! tmux server on a private socket (`-L`), killed when the test ends.

use std::process::Command;
use std::time::{Duration, Instant};

use opsqueue_tests::{DEADLINE, binary};

use crate::helpers::{App, spawn_app, uuid_like};

/// A private tmux server with one detached session.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `shell_command` in a new 120×30 session.
    fn start(shell_command: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmux = Self {
            socket: format!("opsqueue-cli-test-{}-{n}", std::process::id()),
        };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-x", "120", "-y", "30", "-s", "t"])
            .arg(shell_command)
            .status()
            .expect("tmux is missing: run scripts/install-test-deps");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        // -u: UTF-8 whatever the test's locale (CI may run with none), so
        // the check mark and the spinner read back as themselves.
        command.args(["-u", "-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    /// The pane's text; with `escapes`, its colours and attributes too.
    fn capture(&self, escapes: bool) -> String {
        let mut command = self.command();
        command.args(["capture-pane", "-p", "-t", "t"]);
        if escapes {
            command.arg("-e");
        }
        let output = command.output().expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Captures until `done(screen)` holds.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.capture(false);
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The shell command that runs `opsqueue <args>` against `app` and then
/// shows its exit code, keeping the pane open.
fn shell_line(app: &App, env: &str, args: &str) -> String {
    format!(
        "env -i PATH=/usr/bin:/bin HOME={home} TERM=tmux-256color {env} OPSQUEUE_URL={url} OPSQUEUE_TOKEN={token} {bin} {args}; echo \"[exit $?]\"; sleep 600",
        home = app.home.path().display(),
        url = app.cluster.api_url,
        token = app.cluster.token,
        bin = binary("opsqueue").display(),
    )
}

#[tokio::test]
async fn a_person_following_a_run_sees_the_id_the_log_lines_and_the_outcome() {
    let app = spawn_app();
    let tmux = Tmux::start(&shell_line(
        &app,
        "",
        "run diag.sleep seconds:=2 child:=true --follow",
    ));
    let screen = tmux.wait_for("the exit code", |s| s.contains("[exit "));
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();

    let id = lines[0].trim();
    assert!(uuid_like(id), "the id comes first:\n{screen}");
    let logged = app.cluster.logs(id).await;
    assert!(!logged.is_empty());
    for (shown, line) in lines[1..].iter().zip(&logged) {
        let line = line["line"].as_str().unwrap();
        assert!(
            shown.ends_with(line),
            "{shown:?} should end with {line:?}:\n{screen}"
        );
        let time = shown.split_whitespace().next().unwrap();
        assert!(
            time.len() == 8 && time.chars().filter(|c| *c == ':').count() == 2,
            "each line starts with its time, HH:MM:SS:\n{screen}"
        );
    }
    let outcome = lines[logged.len() + 1];
    assert!(
        outcome.starts_with(&format!("✓ {id} completed in ")),
        "a check mark, the id and how long it took:\n{screen}"
    );
    assert_eq!(lines[logged.len() + 2], "[exit 0]", "{screen}");
    assert_eq!(
        lines.len(),
        logged.len() + 3,
        "nothing else is left on screen:\n{screen}"
    );
    for spinner in ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'] {
        assert!(
            !screen.contains(spinner),
            "the spinner is cleared:\n{screen}"
        );
    }
    // In a terminal the outcome is coloured.
    assert!(
        tmux.capture(true).contains('\u{1b}'),
        "colours in a terminal"
    );
}

#[test]
fn a_person_who_sets_no_color_sees_no_colours_and_no_spinner() {
    let app = spawn_app();
    let tmux = Tmux::start(&shell_line(
        &app,
        "NO_COLOR=1",
        "run diag.sleep seconds:=1 --wait",
    ));
    let screen = tmux.wait_for("the exit code", |s| s.contains("[exit "));
    assert!(screen.contains("completed"), "{screen}");
    assert!(screen.contains("[exit 0]"), "{screen}");
    let escapes = tmux.capture(true);
    assert!(
        !escapes.contains('\u{1b}'),
        "no escape codes with NO_COLOR:\n{escapes:?}"
    );
}

#[test]
fn nothing_piped_carries_an_ansi_escape_code() {
    let app = spawn_app();
    let runs = [
        app.run(&["run", "diag.sleep", "seconds:=1", "child:=true", "--follow"]),
        app.run(&["run", "diag.fail", "message=boom", "--wait"]),
        app.run(&["ops", "ls"]),
        app.run(&["run", "diag.noop", "--priority", "12"]),
        app.run(&["targets", "ls"]),
    ];
    for run in &runs {
        assert!(!run.stdout.is_empty() || !run.stderr.is_empty(), "{run:#?}");
        assert!(!run.stdout.contains('\u{1b}'), "ANSI on stdout: {run:#?}");
        assert!(!run.stderr.contains('\u{1b}'), "ANSI on stderr: {run:#?}");
    }
    let id = runs[0].id();
    let got = app.run(&["ops", "get", &id]);
    assert!(got.stdout.contains("status:"), "{got:#?}");
    assert!(!got.stdout.contains('\u{1b}'), "{got:#?}");
}
