//! Waiting for operations: `--wait`, `--follow`, `ops wait` and `ops logs
//! --follow`. While waiting a person sees a spinner with the status, the
//! step and, once the operation reports a percent, a progress bar; with
//! `--follow` the log lines scroll above it. In a pipe (or with `NO_COLOR`)
//! there is no spinner: each change of status is one plain line on stderr.
//!
//! A wait outlives a short outage of the API (a restart): unreachable and
//! 5xx reads are retried for up to a minute, said once on stderr; a
//! refusal (4xx) ends the wait at once.
//!
//! Ctrl-C only stops the wait: the operation runs on, and the message says
//! how to resume (`opsqueue ops wait ID`); exit 130. With
//! `--cancel-on-interrupt` it asks the API to cancel instead and keeps
//! waiting for the cancellation to land (a second Ctrl-C stops that wait).
//! The SIGINT handler is installed before the operation is fired, so a
//! Ctrl-C can never kill the process between the 202 and the wait.
//!
//! The updates come from [`Feed`](crate::feed::Feed), the one place that
//! knows how (the event stream, else long-polling).

use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::client::{Client, Request};
use crate::error::CliError;
use crate::exit::Exit;
use crate::feed::Feed;
use crate::output::{Ui, elapsed, text};

/// How often a person's view is refreshed (a long-poll holds this long).
const INTERACTIVE_HOLD: Duration = Duration::from_secs(1);
/// How long one long-poll holds when nobody watches a spinner.
const QUIET_HOLD: Duration = Duration::from_secs(25);
/// Between reads when less than a second of the timeout is left.
const SHORT_PAUSE: Duration = Duration::from_millis(200);
/// How long a wait rides out an API that cannot be reached or answers 5xx.
const OUTAGE_GRACE: Duration = Duration::from_secs(60);
/// Between reads while the API cannot be reached.
const OUTAGE_PAUSE: Duration = Duration::from_secs(1);

/// Where log lines go while following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Not followed.
    Off,
    /// As text on stdout (the output a person asked for).
    Stdout,
    /// As text on stderr (stdout is kept for the operation's JSON).
    Stderr,
    /// Each line as the API's JSON, one per line, on stdout.
    Json,
}

#[derive(Debug, Clone)]
pub struct WaitOptions {
    pub lines: Lines,
    /// Stop waiting at this instant (exit 3).
    pub deadline: Option<Instant>,
    pub cancel_on_interrupt: bool,
    /// Print the final `✓ completed in 2.1s` line on stderr.
    pub summary: bool,
}

/// Ctrl-C, caught for as long as this lives.
pub struct Interrupt(Signal);

impl Interrupt {
    pub fn install() -> Result<Self, CliError> {
        signal(SignalKind::interrupt())
            .map(Self)
            .map_err(|e| CliError::usage(format!("cannot catch Ctrl-C: {e}")))
    }

    pub async fn recv(&mut self) {
        self.0.recv().await;
    }
}

/// How a wait ended, with the operation as last seen.
#[derive(Debug)]
pub struct Watched {
    pub exit: Exit,
    pub operation: Value,
}

/// Waits for operation `id` to end (or the deadline, or Ctrl-C).
pub async fn watch(
    client: &Client,
    ui: &Ui,
    id: &str,
    options: &WaitOptions,
    interrupt: &mut Interrupt,
) -> Result<Watched, CliError> {
    let mut feed = Feed::new(client, id, options.lines != Lines::Off);
    let mut view = View::new(*ui, id, options.lines);
    let mut hold = Duration::ZERO;
    let mut pause = Duration::ZERO;
    let mut cancelling = false;
    let mut last = Value::Null;
    let mut outage: Option<Instant> = None;
    loop {
        let (this_hold, this_pause, reader) = (hold, pause, &mut feed);
        let step = async move {
            if !this_pause.is_zero() {
                tokio::time::sleep(this_pause).await;
            }
            reader.next(this_hold).await
        };
        let update = tokio::select! {
            update = step => update,
            () = interrupt.recv() => {
                if options.cancel_on_interrupt && !cancelling {
                    cancelling = true;
                    view.note(&format!("interrupted: cancelling {id}…"));
                    match client.send(&Request::post(&["operations", id, "cancel"])).await {
                        Ok(_) => {}
                        Err(CliError::Refused { problem, .. }) if problem.code == "not_cancellable" => {}
                        Err(error) => {
                            view.finish();
                            return Err(error);
                        }
                    }
                    (hold, pause) = (Duration::ZERO, Duration::ZERO);
                    continue;
                }
                view.finish();
                let status = text(&last["status"]);
                let status = if status.is_empty() { "not ended".to_owned() } else { format!("still {status}") };
                eprintln!(
                    "stopped waiting: {id} is {status}{}.\nresume with: opsqueue ops wait {id}",
                    if cancelling { " (cancel requested)" } else { " (not cancelled)" }
                );
                return Ok(Watched { exit: Exit::Interrupted, operation: last });
            }
        };
        let update = match update {
            Ok(update) => {
                if outage.take().is_some() {
                    view.note("reached the API again");
                }
                update
            }
            // The API restarting (a deploy, a reboot) does not end a wait:
            // keep asking for a while, then give up with exit 5.
            Err(error)
                if error.is_transient()
                    && outage.is_none_or(|since| since.elapsed() < OUTAGE_GRACE)
                    && options.deadline.is_none_or(|d| Instant::now() < d) =>
            {
                if outage.is_none() {
                    outage = Some(Instant::now());
                    view.note(&format!(
                        "{}\nstill waiting: retrying for up to {}s",
                        error.render(),
                        OUTAGE_GRACE.as_secs()
                    ));
                }
                (hold, pause) = (Duration::ZERO, OUTAGE_PAUSE);
                continue;
            }
            Err(error) => {
                view.finish();
                return Err(error);
            }
        };
        for line in &update.lines {
            view.line(line);
        }
        last = update.operation;
        view.update(&last);
        if let Some(exit) = Exit::of_status(last["status"].as_str().unwrap_or("")) {
            view.finish();
            if options.summary && !ui.json() {
                eprintln!("{}", summary(ui, &last));
            }
            return Ok(Watched {
                exit,
                operation: last,
            });
        }
        let remaining = options
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            view.finish();
            let status = text(&last["status"]);
            eprintln!(
                "timed out waiting: {id} is still {status}.\nkeep waiting with: opsqueue ops wait {id}"
            );
            return Ok(Watched {
                exit: Exit::TimedOut,
                operation: last,
            });
        }
        let wanted = if ui.fancy || options.lines != Lines::Off {
            INTERACTIVE_HOLD
        } else {
            QUIET_HOLD
        };
        hold = match remaining {
            Some(left) => wanted.min(Duration::from_secs(left.as_secs())),
            None => wanted,
        };
        pause = if hold.is_zero() {
            remaining.unwrap_or(SHORT_PAUSE).min(SHORT_PAUSE)
        } else {
            Duration::ZERO
        };
    }
}

/// `✓ 0192… completed in 2.1s`, `✗ 0192… failed: code: message`.
pub fn summary(ui: &Ui, op: &Value) -> String {
    let id = text(&op["id"]);
    let status = text(&op["status"]);
    let took = elapsed(&op["started_at"], &op["finished_at"])
        .map(|t| format!(" in {t}"))
        .unwrap_or_default();
    let mark = match (ui.fancy, status.as_str()) {
        (false, _) => "",
        (true, "completed") => "✓ ",
        (true, "failed") => "✗ ",
        (true, _) => "• ",
    };
    let mut line = format!("{mark}{id} {}{took}", ui.status_stderr(&status));
    match status.as_str() {
        "completed" => {
            if let Some(changed) = op["result"]["changed"].as_bool() {
                line.push_str(&format!(" (changed: {changed})"));
            }
        }
        "failed" | "cancelled" => {
            let error = &op["error"];
            if !error.is_null() {
                line.push_str(&format!(
                    ": {}: {}",
                    text(&error["code"]),
                    text(&error["message"])
                ));
            }
            let attempts = (op["attempt"].as_i64(), op["max_attempts"].as_i64());
            if status == "failed" {
                if error["retryable"] == false {
                    line.push_str(" (not retryable)");
                } else if let (Some(attempt), Some(max)) = attempts {
                    line.push_str(&format!(" (attempt {attempt} of {max})"));
                }
            }
        }
        _ => {}
    }
    line
}

/// One log line as a person reads it: local time, then the text; output
/// of a command is marked `out:`/`err:`.
pub fn format_line(ui: &Ui, line: &Value) -> String {
    let at = line["at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let tag = match line["stream"].as_str() {
        Some("stdout") => "out: ",
        Some("stderr") => "err: ",
        _ => "",
    };
    format!("{} {tag}{}", ui.dim(&at), text(&line["line"]))
}

/// The spinner (or plain status lines) and the log lines.
struct View {
    ui: Ui,
    id: String,
    lines: Lines,
    bar: Option<ProgressBar>,
    bar_mode: bool,
    shown: String,
    attempt: Option<i64>,
}

impl View {
    fn new(ui: Ui, id: &str, lines: Lines) -> Self {
        let bar = ui.fancy.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg}")
                    .expect("a valid template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            );
            bar.set_message(format!("{id} …"));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            ui,
            id: id.to_owned(),
            lines,
            bar,
            bar_mode: false,
            shown: String::new(),
            attempt: None,
        }
    }

    fn update(&mut self, op: &Value) {
        let status = text(&op["status"]);
        let step = text(&op["progress"]["step"]);
        let percent = op["progress"]["percent"].as_f64();
        let mut message = format!("{} {}", self.id, self.ui.status_stderr(&status));
        if !step.is_empty() {
            message.push_str(&format!(": {step}"));
        }
        match &self.bar {
            Some(bar) => {
                if let Some(percent) = percent {
                    if !self.bar_mode {
                        self.bar_mode = true;
                        bar.set_length(100);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner:.cyan} [{bar:30.cyan/blue}] {pos:>3}% {msg}",
                            )
                            .expect("a valid template")
                            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
                            .progress_chars("=> "),
                        );
                    }
                    bar.set_position(percent.clamp(0.0, 100.0).round() as u64);
                }
                bar.set_message(message);
            }
            // The end is the summary's to say.
            None if Exit::of_status(&status).is_some() => {}
            None => {
                let mut plain = format!("{} {status}", self.id);
                if !step.is_empty() {
                    plain.push_str(&format!(": {step}"));
                }
                if let Some(percent) = percent {
                    plain.push_str(&format!(" ({percent:.0}%)"));
                }
                if plain != self.shown {
                    eprintln!("{plain}");
                    self.shown = plain;
                }
            }
        }
    }

    fn line(&mut self, line: &Value) {
        let attempt = line["attempt"].as_i64();
        let new_attempt = self.attempt.is_some() && attempt.is_some() && attempt != self.attempt;
        self.attempt = attempt.or(self.attempt);
        let text = match self.lines {
            Lines::Off => return,
            Lines::Json => serde_json::to_string(line).expect("JSON always serializes"),
            Lines::Stdout | Lines::Stderr => {
                let text = format_line(&self.ui, line);
                if new_attempt {
                    format!("-- attempt {} --\n{text}", attempt.unwrap_or_default())
                } else {
                    text
                }
            }
        };
        let print = || match self.lines {
            Lines::Stderr => eprintln!("{text}"),
            _ => println!("{text}"),
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::args::Format;

    const PLAIN: Ui = Ui {
        format: Format::Table,
        fancy: false,
    };

    #[test]
    fn the_spinner_becomes_a_progress_bar_once_a_percent_is_reported() {
        let fancy = Ui {
            format: Format::Table,
            fancy: true,
        };
        let mut view = View::new(fancy, "op-1", Lines::Off);
        view.update(&json!({"status": "running", "progress": {"step": "copying"}}));
        assert!(!view.bar_mode, "a step alone keeps the spinner");
        view.update(
            &json!({"status": "running", "progress": {"step": "copying", "percent": 42.4}}),
        );
        assert!(view.bar_mode);
        assert_eq!(view.bar.as_ref().unwrap().position(), 42);
        view.finish();
        assert!(view.bar.is_none());
    }

    #[test]
    fn the_summary_says_how_it_ended_and_why() {
        let done = json!({"id": "op-1", "status": "completed", "result": {"changed": true},
            "started_at": "2024-01-01T00:00:00Z", "finished_at": "2024-01-01T00:00:02.5Z"});
        assert_eq!(
            summary(&PLAIN, &done),
            "op-1 completed in 2.5s (changed: true)"
        );
        let failed = json!({"id": "op-2", "status": "failed", "attempt": 3, "max_attempts": 3,
            "error": {"code": "timeout", "message": "took too long", "retryable": true}});
        assert_eq!(
            summary(&PLAIN, &failed),
            "op-2 failed: timeout: took too long (attempt 3 of 3)"
        );
        let refused = json!({"id": "op-3", "status": "failed", "attempt": 1, "max_attempts": 3,
            "error": {"code": "diag_failure", "message": "no", "retryable": false}});
        assert_eq!(
            summary(&PLAIN, &refused),
            "op-3 failed: diag_failure: no (not retryable)"
        );
    }

    #[test]
    fn a_log_line_shows_its_stream_unless_it_is_a_step() {
        let step = json!({"at": "2024-01-01T00:00:00Z", "stream": "step", "line": "$ sleep 1"});
        let out = json!({"at": "2024-01-01T00:00:00Z", "stream": "stdout", "line": "hello"});
        assert!(format_line(&PLAIN, &step).ends_with(" $ sleep 1"));
        assert!(format_line(&PLAIN, &out).ends_with(" out: hello"));
    }
}
