//! The one command runner every driver uses to start a program on the host.
//!
//! Invariants:
//! - **No shell, ever.** A program and an argument vector go to
//!   `Command::new(program).args(args)`; nothing is parsed or interpolated, so
//!   `;`, `$(…)` and spaces reach the program as literal bytes.
//! - **stdin is closed** (`/dev/null`) unless bytes are given; those are
//!   written and the pipe is closed, so a program that reads stdin never
//!   waits for input that will not come.
//! - **Own process group.** The child leads a new group (`process_group(0)`).
//!   A timeout or a cancellation sends SIGTERM to the whole group, then
//!   SIGKILL after `kill_grace`; after the leader exits, what is left of the
//!   group is killed too (unless `keep_background`). The runner always waits
//!   for the leader, so no zombie and no stray process is left behind; if the
//!   runner's future is dropped mid-way, a guard kills the group.
//! - **Output** of each stream is kept up to a cap (`output_cap`, default the
//!   worker's `output_cap_bytes`) and also handed, line by line as it comes,
//!   to a [`LineSink`] (the operation's log). A step line shows the argument
//!   vector and the pid before any output, another the exit status.
//! - **Redaction.** Every string in `redact` is replaced by `***` in every
//!   line handed to the sink, in the logged argument vector and in the
//!   captured output, so a password passed as an argument (clpctl takes them
//!   so) never reaches the operation's log or result.
//! - A non-zero exit is not an error here: the caller reads
//!   [`CommandOutput::status`] (or calls [`CommandOutput::check`]). Errors are
//!   the cases where no status exists or it was forced: the program could not
//!   be started (not found: permanent), it timed out, it was cancelled.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use opsqueue_shared::store::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How long a group has between SIGTERM and SIGKILL, unless the spec says.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// After the leader exits, how long to keep reading output that a process
/// kept in the background may still hold open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// Longer lines are split for the log (the capture is not affected).
pub const MAX_LOG_LINE: usize = 4096;

/// Where output lines and step lines go as they happen: an operation's log
/// (through [`crate::Context`]) or, in tests, memory.
pub trait LineSink: Send + Sync {
    fn line(&self, stream: Stream, line: String);
}

/// A sink that keeps every line; for tests and for callers that want the
/// lines themselves.
#[derive(Debug, Default)]
pub struct MemorySink(std::sync::Mutex<Vec<(Stream, String)>>);

impl MemorySink {
    pub fn lines(&self) -> Vec<(Stream, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl LineSink for MemorySink {
    fn line(&self, stream: Stream, line: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((stream, line));
    }
}

/// A program to run: what [`crate::Context::run`] takes. Build it with
/// [`CommandSpec::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables added to (or overriding) the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Start from an empty environment (plus `env`).
    pub clear_env: bool,
    pub cwd: Option<PathBuf>,
    /// Bytes written to stdin, which is then closed; `None`: stdin is
    /// `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// This command's own limit; the operation's deadline applies anyway
    /// (through cancellation).
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    /// Bytes kept per stream; `None`: the worker's `output_cap_bytes`.
    pub output_cap: Option<usize>,
    /// Secrets replaced by `***` in logged lines, the logged argv and the
    /// captured output.
    pub redact: Vec<String>,
    /// Stream stdout/stderr lines into the log (default). Turn it off for
    /// output that must not be stored (pm2's `jlist` carries environments).
    pub log_output: bool,
    /// Leave processes the program put in the background running after it
    /// exits. Off by default: the rest of its group is killed.
    pub keep_background: bool,
}

impl CommandSpec {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            cwd: None,
            stdin: None,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            output_cap: None,
            redact: Vec::new(),
            log_output: true,
            keep_background: false,
        }
    }

    /// An argument vector whose first element is the program (a configured
    /// command such as `["sudo", "-u", "web", "pm2"]`); `None` if empty.
    pub fn from_argv<S: AsRef<OsStr>>(argv: &[S]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Self::new(program).args(args))
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = Some(bytes);
        self
    }

    /// Never log or return this string; empty strings are ignored.
    pub fn redact(mut self, secret: impl Into<String>) -> Self {
        self.redact.push(secret.into());
        self
    }

    pub fn quiet(mut self) -> Self {
        self.log_output = false;
        self
    }

    pub fn keep_background(mut self) -> Self {
        self.keep_background = true;
        self
    }

    /// The argument vector as a log line: shell-like quoting for reading
    /// only (nothing ever parses it), secrets redacted.
    pub fn display(&self) -> String {
        let redactor = Redactor::new(&self.redact);
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| redactor.apply(&quote(&a.to_string_lossy())).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn quote(arg: &str) -> Cow<'_, str> {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        Cow::Borrowed(arg)
    } else {
        Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")))
    }
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// What a finished program left: its status and captured (capped,
/// redacted) output.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The argument vector as logged (redacted).
    pub command: String,
    pub pid: u32,
    pub status: ExitInfo,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    pub fn stderr_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// Whether stdout or stderr holds `text` (how drivers read a program's
    /// words for a failure: "not found", "Connection refused", …).
    pub fn mentions(&self, text: &str) -> bool {
        self.stderr_text().contains(text) || self.stdout_text().contains(text)
    }

    /// The message of a failure: the argument vector, how it ended and the
    /// last lines of stderr (what [`CommandOutput::check`] reports, for a
    /// driver that classifies the failure itself).
    pub fn failure_message(&self) -> String {
        let tail = self.stderr_tail();
        let mut message = format!("{} ended with {}", self.command, self.status);
        if !tail.is_empty() {
            message.push_str(": ");
            message.push_str(&tail);
        }
        message
    }

    /// The last three non-empty stderr lines, joined by ` | `, at most 500
    /// characters.
    pub fn stderr_tail(&self) -> String {
        let stderr = self.stderr_text();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..]
            .join(" | ")
            .chars()
            .take(500)
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{command}: program not found")]
    NotFound { command: String },
    #[error("cannot start {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{} timed out after {:?} and was killed", .output.command, .after)]
    Timeout {
        after: Duration,
        output: Box<CommandOutput>,
    },
    #[error("{} was cancelled and killed", .output.command)]
    Cancelled { output: Box<CommandOutput> },
    #[error("i/o with {command}: {source}")]
    Io { command: String, source: io::Error },
}

impl RunError {
    /// What the program printed before it was stopped, if it started.
    pub fn output(&self) -> Option<&CommandOutput> {
        match self {
            RunError::Timeout { output, .. } | RunError::Cancelled { output } => Some(output),
            _ => None,
        }
    }
}

/// Replaces secrets by `***`.
struct Redactor<'a> {
    secrets: Vec<&'a str>,
}

impl<'a> Redactor<'a> {
    fn new(secrets: &'a [String]) -> Self {
        let mut secrets: Vec<&str> = secrets
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    fn apply<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(secret) {
                text = Cow::Owned(text.replace(secret, "***"));
            }
        }
        text
    }

    fn apply_bytes(&self, bytes: &mut Vec<u8>) {
        for secret in &self.secrets {
            let needle = secret.as_bytes();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                let mut out = Vec::with_capacity(bytes.len());
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(needle) {
                        out.extend_from_slice(b"***");
                        i += needle.len();
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                *bytes = out;
            }
        }
    }
}

/// Sends `signal` to process group `pgid`; a group already gone is fine.
fn kill_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pgid as libc::pid_t, signal);
    }
}

/// Kills the group if the runner is dropped before the program was waited
/// for (the operation's task aborted); tokio reaps the leader.
struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid, libc::SIGKILL);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    Timeout,
    Cancelled,
}

/// Runs `spec` to the end: the program exits, or `spec.timeout` passes, or
/// `cancel` fires (then the group is killed and waited for). Lines go to
/// `sink` as they come; `default_cap` applies when the spec sets no cap.
pub async fn run(
    spec: &CommandSpec,
    cancel: &CancellationToken,
    sink: &dyn LineSink,
    default_cap: usize,
) -> Result<CommandOutput, RunError> {
    let redactor = Redactor::new(&spec.redact);
    let command = spec.display();
    let cap = spec.output_cap.unwrap_or(default_cap);
    let mut cmd = build(spec);

    let started = Instant::now();
    let empty = |pid| CommandOutput {
        command: command.clone(),
        pid,
        status: ExitInfo {
            code: None,
            signal: None,
        },
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        duration: Duration::ZERO,
    };
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled {
            output: Box::new(empty(0)),
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => {
            sink.line(Stream::Step, format!("$ {command}: cannot start: {source}"));
            return Err(if source.kind() == io::ErrorKind::NotFound {
                RunError::NotFound { command }
            } else {
                RunError::Spawn { command, source }
            });
        }
    };
    let pid = child.id().unwrap_or_default();
    let mut guard = GroupGuard {
        pgid: pid,
        armed: true,
    };
    sink.line(Stream::Step, format!("$ {command} [pid {pid}]"));

    let stdin_pipe = child.stdin.take();
    let feed = async {
        if let (Some(mut pipe), Some(bytes)) = (stdin_pipe, spec.stdin.as_deref()) {
            // A program that exits without reading everything closes the
            // pipe: that is its business, not an error.
            let _ = pipe.write_all(bytes).await;
            let _ = pipe.shutdown().await;
        }
    };
    let exited = CancellationToken::new();
    let log = spec.log_output.then_some((sink, &redactor));
    let out = read_stream(child.stdout.take(), Stream::Stdout, cap, log, &exited);
    let err = read_stream(child.stderr.take(), Stream::Stderr, cap, log, &exited);
    let wait = async {
        let result = wait_child(&mut child, pid, spec, cancel).await;
        exited.cancel();
        result
    };
    let (waited, out, err, ()) = tokio::join!(wait, out, err, feed);
    guard.armed = false;

    let (status, forced) = waited.map_err(|source| RunError::Io {
        command: command.clone(),
        source,
    })?;
    let (mut stdout, stdout_truncated) = out;
    let (mut stderr, stderr_truncated) = err;
    redactor.apply_bytes(&mut stdout);
    redactor.apply_bytes(&mut stderr);
    let duration = started.elapsed();
    let status = ExitInfo::from(status);
    let why = match forced {
        Some(Forced::Timeout) => " (timed out)",
        Some(Forced::Cancelled) => " (cancelled)",
        None => "",
    };
    sink.line(
        Stream::Step,
        format!(
            "pid {pid} ended with {status}{why} after {} ms",
            duration.as_millis()
        ),
    );
    let output = CommandOutput {
        command,
        pid,
        status,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration,
    };
    match forced {
        None => Ok(output),
        Some(Forced::Timeout) => Err(RunError::Timeout {
            after: spec.timeout.unwrap_or_default(),
            output: Box::new(output),
        }),
        Some(Forced::Cancelled) => Err(RunError::Cancelled {
            output: Box::new(output),
        }),
    }
}

/// The process `spec` describes: its own group, stdin closed or piped,
/// output piped, the worker's environment without systemd's variables.
fn build(spec: &CommandSpec) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .process_group(0)
        .kill_on_drop(true)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if spec.clear_env {
        cmd.env_clear();
    }
    // systemd's NOTIFY_SOCKET and WATCHDOG_* speak for the worker only.
    for key in opsqueue_shared::systemd::SERVICE_ENV {
        cmd.env_remove(key);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd
}

/// Waits for the leader; on timeout or cancellation stops the group first.
async fn wait_child(
    child: &mut tokio::process::Child,
    pgid: u32,
    spec: &CommandSpec,
    cancel: &CancellationToken,
) -> io::Result<(ExitStatus, Option<Forced>)> {
    let limit = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let forced = tokio::select! {
        status = child.wait() => {
            let status = status?;
            if !spec.keep_background {
                kill_group(pgid, libc::SIGKILL);
            }
            return Ok((status, None));
        }
        () = limit => Forced::Timeout,
        () = cancel.cancelled() => Forced::Cancelled,
    };
    kill_group(pgid, libc::SIGTERM);
    let status = match tokio::time::timeout(spec.kill_grace, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            kill_group(pgid, libc::SIGKILL);
            child.wait().await?
        }
    };
    // Whatever of the group ignored SIGTERM or outlived the leader.
    kill_group(pgid, libc::SIGKILL);
    Ok((status, Some(forced)))
}

/// Reads one stream to its end: keeps up to `cap` bytes and hands complete
/// lines to the sink. Once the leader has exited, reading stops after
/// [`DRAIN_AFTER_EXIT`] even if something still holds the pipe open.
async fn read_stream(
    pipe: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    cap: usize,
    log: Option<(&dyn LineSink, &Redactor<'_>)>,
    exited: &CancellationToken,
) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut line = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        if let Some((sink, redactor)) = log {
            let text = String::from_utf8_lossy(line);
            let text = text.strip_suffix('\r').unwrap_or(&text);
            sink.line(stream, redactor.apply(text).into_owned());
        }
        line.clear();
    };
    let give_up = async {
        exited.cancelled().await;
        tokio::time::sleep(DRAIN_AFTER_EXIT).await;
    };
    tokio::pin!(give_up);
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = &mut give_up => break,
        };
        let chunk = &buf[..n];
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..room.min(n)]);
        truncated |= n > room;
        if log.is_some() {
            for piece in chunk.split_inclusive(|b| *b == b'\n') {
                let (body, ends) = match piece.strip_suffix(b"\n") {
                    Some(body) => (body, true),
                    None => (piece, false),
                };
                let mut rest = body;
                while !rest.is_empty() {
                    if line.len() == MAX_LOG_LINE {
                        emit(&mut line);
                    }
                    let take = (MAX_LOG_LINE - line.len()).min(rest.len());
                    line.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                }
                if ends {
                    emit(&mut line);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
    (kept, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_spec(
        spec: CommandSpec,
    ) -> (Result<CommandOutput, RunError>, Vec<(Stream, String)>) {
        let sink = MemorySink::default();
        let result = run(&spec, &CancellationToken::new(), &sink, 64 * 1024).await;
        (result, sink.lines())
    }

    fn gone(pid: u32) -> bool {
        opsqueue_shared::process::start_ticks(pid)
            .unwrap()
            .is_none()
    }

    async fn wait_gone(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(pid) {
            assert!(Instant::now() < deadline, "pid {pid} is still alive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn arguments_reach_the_program_literally_without_a_shell() {
        let args = ["a;b", "$(id)", "x y", "`whoami`", "'q'", "*", "> out"];
        let spec = CommandSpec::new("printf").arg("%s\\n").args(args);
        let (result, lines) = run_spec(spec).await;
        let output = result.unwrap();
        assert!(output.success());
        let printed: Vec<&str> = std::str::from_utf8(&output.stdout)
            .unwrap()
            .lines()
            .collect();
        assert_eq!(printed, args);
        let logged: Vec<&str> = lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(logged, args);
        assert!(lines[0].1.starts_with("$ printf "), "{lines:?}");
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_and_marked() {
        let spec = CommandSpec::new("seq")
            .args(["1", "100000"])
            .output_cap(1000)
            .quiet();
        let (result, lines) = run_spec(spec).await;
        let output = result.unwrap();
        assert_eq!(output.stdout.len(), 1000);
        assert!(output.stdout_truncated);
        assert!(output.stdout.starts_with(b"1\n2\n3\n"));
        assert!(
            lines.iter().all(|(s, _)| *s == Stream::Step),
            "quiet logs no output"
        );
    }

    #[tokio::test]
    async fn stdin_is_closed_unless_bytes_are_given() {
        let (result, _) = run_spec(CommandSpec::new("cat").timeout(Duration::from_secs(30))).await;
        let output = result.unwrap();
        assert!(output.success() && output.stdout.is_empty());

        let (result, _) = run_spec(CommandSpec::new("cat").stdin("hello\nworld")).await;
        assert_eq!(result.unwrap().stdout, b"hello\nworld");
    }

    #[tokio::test]
    async fn the_exit_status_is_recorded_as_a_code_or_a_signal() {
        let (result, lines) =
            run_spec(CommandSpec::new("sh").args(["-c", "echo oops >&2; exit 3"])).await;
        let output = result.unwrap();
        assert_eq!(
            output.status,
            ExitInfo {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            lines.iter().find(|(s, _)| *s == Stream::Stderr).unwrap().1,
            "oops"
        );
        assert!(lines.last().unwrap().1.contains("exit code 3"));

        let (result, _) = run_spec(CommandSpec::new("sh").args(["-c", "kill -9 $$"])).await;
        assert_eq!(result.unwrap().status.signal, Some(9));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_permanent_error() {
        let (result, lines) =
            run_spec(CommandSpec::new("/nonexistent/opsqueue-no-such-program")).await;
        let err = result.unwrap_err();
        assert!(matches!(err, RunError::NotFound { .. }), "{err:?}");
        assert!(lines[0].1.contains("cannot start"));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_program_and_is_retryable() {
        let spec = CommandSpec::new("sleep")
            .arg("60")
            .timeout(Duration::from_millis(200));
        let (result, _) = run_spec(spec).await;
        let err = result.unwrap_err();
        let pid = err.output().unwrap().pid;
        assert!(matches!(err, RunError::Timeout { .. }), "{err:?}");
        assert!(gone(pid));
    }

    #[tokio::test]
    async fn cancelling_kills_the_whole_group_grandchildren_included() {
        let sink = std::sync::Arc::new(MemorySink::default());
        let cancel = CancellationToken::new();
        // The test chooses sh as its program; the runner adds no shell.
        let spec = CommandSpec::new("sh").args(["-c", "sleep 60 & echo $!; wait"]);
        let task = {
            let (sink, cancel) = (sink.clone(), cancel.clone());
            tokio::spawn(async move { run(&spec, &cancel, &*sink, 1024).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild: u32 = loop {
            let lines = sink.lines();
            if let Some((_, pid)) = lines.iter().find(|(s, _)| *s == Stream::Stdout) {
                break pid.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "no pid printed: {lines:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!gone(grandchild));
        cancel.cancel();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }), "{err:?}");
        assert!(gone(err.output().unwrap().pid), "the child was waited for");
        wait_gone(grandchild).await;
    }

    #[tokio::test]
    async fn a_program_already_cancelled_is_never_started() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let sink = MemorySink::default();
        let err = run(&CommandSpec::new("true"), &cancel, &sink, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled { .. }));
        assert!(sink.lines().is_empty());
    }

    #[tokio::test]
    async fn background_leftovers_of_a_finished_program_are_killed() {
        let spec = CommandSpec::new("sh").args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"]);
        let (result, _) = run_spec(spec).await;
        let output = result.unwrap();
        let leftover: u32 = output.stdout_text().trim().parse().unwrap();
        wait_gone(leftover).await;
    }

    #[tokio::test]
    async fn secrets_are_redacted_from_the_log_the_argv_and_the_output() {
        let spec = CommandSpec::new("sh")
            .args(["-c", "echo \"pw=$1\"; echo \"$1\" >&2", "sh", "hunter2"])
            .redact("hunter2")
            .redact("");
        let (result, lines) = run_spec(spec).await;
        let output = result.unwrap();
        assert_eq!(output.stdout_text(), "pw=***\n");
        assert_eq!(output.stderr_text(), "***\n");
        assert!(!output.command.contains("hunter2"));
        assert!(
            lines.iter().all(|(_, l)| !l.contains("hunter2")),
            "{lines:?}"
        );
        assert!(lines[0].1.contains("***"));
        assert!(
            lines
                .iter()
                .any(|(s, l)| *s == Stream::Stdout && l == "pw=***")
        );
    }

    #[tokio::test]
    async fn long_lines_are_split_for_the_log_but_kept_whole_in_the_capture() {
        let long = "x".repeat(MAX_LOG_LINE * 2 + 10);
        let (result, lines) = run_spec(CommandSpec::new("printf").args(["%s", &long])).await;
        assert_eq!(result.unwrap().stdout.len(), long.len());
        let parts: Vec<usize> = lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.len())
            .collect();
        assert_eq!(parts, vec![MAX_LOG_LINE, MAX_LOG_LINE, 10]);
    }

    /// Whether a child spawned from `cmd` gets `key` when the worker has it
    /// in its own environment.
    fn passes_on(cmd: &tokio::process::Command, cleared: bool, key: &str) -> bool {
        match cmd.as_std().get_envs().find(|(k, _)| *k == OsStr::new(key)) {
            Some((_, value)) => value.is_some(),
            None => !cleared,
        }
    }

    #[test]
    fn systemds_variables_in_the_workers_environment_never_reach_a_child() {
        let inherits = CommandSpec::new("env").env("OPSQUEUE_TEST", "1");
        let clears = inherits.clone().clear_env();
        for spec in [inherits, clears] {
            let cmd = build(&spec);
            for key in opsqueue_shared::systemd::SERVICE_ENV {
                assert!(
                    !passes_on(&cmd, spec.clear_env, key),
                    "{key} reaches the child"
                );
            }
            assert!(passes_on(&cmd, spec.clear_env, "OPSQUEUE_TEST"));
            assert_eq!(passes_on(&cmd, spec.clear_env, "HOME"), !spec.clear_env);
        }
    }

    #[test]
    fn the_displayed_argv_quotes_what_a_reader_could_misread() {
        let spec = CommandSpec::new("pm2").args(["start", "a b", "x;y", "it's"]);
        assert_eq!(spec.display(), r"pm2 start 'a b' 'x;y' 'it'\''s'");
        assert_eq!(
            CommandSpec::from_argv(&["sudo", "-u", "web"])
                .unwrap()
                .display(),
            "sudo -u web"
        );
        assert!(CommandSpec::from_argv::<&str>(&[]).is_none());
    }
}
