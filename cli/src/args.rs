//! The command line, declared with clap's derive API: every command, its
//! arguments and its `--help` examples. Nothing here talks to the API; the
//! `commands` modules take these values and do the work.
//!
//! Options shared by the commands that fire an operation are two flattened
//! structs, [`FireArgs`] (target, idempotency key) and [`WaitArgs`]
//! (`--wait`, `--follow`, `--timeout`, `--cancel-on-interrupt`), so every
//! shortcut behaves like `opsqueue run`.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::fields::parse_field;

const ABOUT: &str = "The opsqueue client: fire operations, follow them, list and retry them.";

const EXAMPLES: &str = "\
Examples:
  opsqueue login --url https://ops.example.com --token-file ~/ops.key
  opsqueue run diag.sleep seconds:=2 child:=true --follow
  opsqueue pm2 restart web --wait
  opsqueue ops ls --status failed --since 1h
  opsqueue ops retry 01920b6c-… --follow

Connection: --url/--token/--token-file/--ca-cert, else OPSQUEUE_URL, OPSQUEUE_TOKEN,
OPSQUEUE_CA_CERT, else ~/.config/opsqueue/config.toml (written by `opsqueue login`).

Exit codes: 0 completed, 1 failed, 2 cancelled, 3 timed out waiting, 4 refused (4xx),
5 cannot reach the API or 5xx, 64 usage, 130 stopped waiting with Ctrl-C.";

#[derive(Debug, Parser)]
#[command(name = "opsqueue", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// The API's base URL [env: OPSQUEUE_URL; default http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// An API key (prefer --token-file: a command line is visible to others) [env: OPSQUEUE_TOKEN]
    #[arg(long, global = true, value_name = "KEY", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the API key
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust only the certificate(s) in this PEM file (a self-signed control host) [env: OPSQUEUE_CA_CERT]
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// table for people, json for scripts (the API's own JSON)
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a URL and key, and store them in ~/.config/opsqueue/config.toml (mode 0600)
    #[command(after_help = "\
Examples:
  opsqueue login --url https://ops.example.com --token-file ~/ops.key
  opsqueue login --url https://10.0.0.2:8443 --token-file key --ca-cert control.pem
  OPSQUEUE_TOKEN=… opsqueue login --url http://127.0.0.1:8080 --no-check")]
    Login(LoginArgs),
    /// Fire an operation of any type; print its id, and wait or follow it
    #[command(after_help = "\
Fields: key=value is a JSON string, key:=json is parsed as JSON (httpie's convention).

Examples:
  opsqueue run diag.noop
  opsqueue run diag.sleep seconds:=2 child:=true --follow
  opsqueue run script.run name=manage_site.sh 'args:=[\"create\",\"{operation_id}\"]' --wait --timeout 10m
  opsqueue run pm2.restart name=web --target web-2 --idempotency-key deploy-42
  ID=$(opsqueue run diag.noop) && opsqueue ops wait \"$ID\"")]
    Run(RunArgs),
    /// List, read, follow, cancel, retry and wait for operations
    Ops {
        #[command(subcommand)]
        command: OpsCommand,
    },
    /// Workflows: fire one from a file (checked here first with the API's rules), follow its steps
    #[command(after_help = "\
Examples:
  opsqueue workflow run deploy.toml --follow
  opsqueue workflow ls
  opsqueue workflow retry 01920b6c-… --follow")]
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// The targets and the workers serving them
    Targets {
        #[command(subcommand)]
        command: TargetsCommand,
    },
    /// The cron schedules
    Schedules {
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// pm2 apps: the /api/v1/pm2 routes
    Pm2 {
        #[command(subcommand)]
        command: Pm2Command,
    },
    /// systemd units: the /api/v1/systemd routes
    Systemd {
        #[command(subcommand)]
        command: SystemdCommand,
    },
    /// Caddy reverse-proxy sites: the /api/v1/caddy routes
    Caddy {
        #[command(subcommand)]
        command: CaddyCommand,
    },
    /// Proxmox VE guests: the /api/v1/proxmox routes
    Proxmox {
        #[command(subcommand)]
        command: ProxmoxCommand,
    },
    /// Print a shell completion script
    #[command(after_help = "\
Examples:
  opsqueue completions bash > /etc/bash_completion.d/opsqueue
  opsqueue completions zsh > \"${fpath[1]}/_opsqueue\"
  opsqueue completions fish > ~/.config/fish/completions/opsqueue.fish")]
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Store without asking the API whether the key works
    #[arg(long)]
    pub no_check: bool,
}

/// Waiting for the operation a command fired.
#[derive(Debug, Clone, Default, Args)]
pub struct WaitArgs {
    /// Wait until it ends: a spinner with its status, step and progress; exit with its outcome
    #[arg(long, conflicts_with = "follow")]
    pub wait: bool,
    /// Wait, and print its log lines as they come
    #[arg(long)]
    pub follow: bool,
    /// Stop waiting after this long (10m, 1h30m, 90s) and exit 3; implies --wait
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// On Ctrl-C, cancel the operation instead of only stopping the wait
    #[arg(long)]
    pub cancel_on_interrupt: bool,
}

impl WaitArgs {
    pub fn waits(&self) -> bool {
        self.wait || self.follow || self.timeout.is_some()
    }
}

/// Options of every command that fires an operation.
#[derive(Debug, Clone, Default, Args)]
pub struct FireArgs {
    /// Which host's worker runs it (default: local)
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// A replay with the same key returns the first operation instead of firing twice
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The operation type, family.verb (diag.sleep, pm2.restart, systemd.start, …)
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Payload fields: key=value (a string) or key:=json
    #[arg(value_name = "FIELD", value_parser = parse_field)]
    pub fields: Vec<(String, Value)>,
    /// Who asks (default: the key's source, else api)
    #[arg(long)]
    pub source: Option<String>,
    /// 0 to 9, lower runs first (default 5)
    #[arg(long)]
    pub priority: Option<i64>,
    /// Attempts for retryable failures (default 3)
    #[arg(long)]
    pub max_attempts: Option<i64>,
    /// The operation's own time limit, enforced by the worker (e.g. 5m); not how long to wait
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub op_timeout: Option<Duration>,
    #[command(flatten)]
    pub fire: FireArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl StatusFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Pending => "pending",
            StatusFilter::Running => "running",
            StatusFilter::Completed => "completed",
            StatusFilter::Failed => "failed",
            StatusFilter::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Check a workflow file (TOML or JSON) with the API's rules, fire it, and wait or follow it
    #[command(after_help = "\
A workflow: {name?, on_failure? (compensate|stop), steps: [{name, type, payload?,
depends_on?, compensate?: {type, payload?}, target?, timeout_secs?, max_attempts?}]}.

Examples:
  opsqueue workflow run deploy.toml
  opsqueue workflow run deploy.json --follow --timeout 30m
  opsqueue workflow run deploy.toml --target web-2 --idempotency-key deploy-42 --wait")]
    Run(WorkflowRunArgs),
    /// Show a workflow: its steps as a tree, and its compensations
    #[command(after_help = "\
Examples:
  opsqueue workflow get 01920b6c-…
  opsqueue workflow get 01920b6c-… -o json | jq '.steps[] | {name, status}'")]
    Get {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// List workflows, newest first, with their steps' states
    #[command(after_help = "\
Examples:
  opsqueue workflow ls
  opsqueue workflow ls -o json | jq -r '.items[].id'")]
    Ls,
    /// Cancel a workflow: steps not started are cancelled, running ones stopped, completed ones undone
    #[command(after_help = "\
Examples:
  opsqueue workflow cancel 01920b6c-…
  opsqueue workflow cancel 01920b6c-… --no-compensate")]
    Cancel {
        #[arg(value_name = "ID")]
        id: String,
        /// Leave the completed steps as they are
        #[arg(long)]
        no_compensate: bool,
    },
    /// Run a failed or cancelled workflow again (completed steps stay completed)
    #[command(after_help = "\
Examples:
  opsqueue workflow retry 01920b6c-…
  opsqueue workflow retry 01920b6c-… --follow")]
    Retry {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Args)]
pub struct WorkflowRunArgs {
    /// The workflow file: TOML (by its .toml extension) or JSON
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The steps' default target (default: local)
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// Who asks (default: the key's source, else api)
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// A replay with the same key returns the first workflow instead of firing twice
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  opsqueue ops ls --status failed --since 1h
  opsqueue ops get 01920b6c-…
  opsqueue ops logs 01920b6c-… --follow
  opsqueue ops retry 01920b6c-… --wait
  opsqueue ops wait \"$A\" \"$B\" --timeout 10m")]
pub enum OpsCommand {
    /// List operations, newest first
    #[command(after_help = "\
Examples:
  opsqueue ops ls
  opsqueue ops ls --status failed --since 1h
  opsqueue ops ls --type pm2.restart --target web-2 --limit 200
  opsqueue ops ls -o json | jq -r '.items[].id'")]
    Ls(LsArgs),
    /// Show one operation
    #[command(after_help = "\
Examples:
  opsqueue ops get 01920b6c-…
  opsqueue ops get 01920b6c-… -o json | jq .result")]
    Get {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Print an operation's log lines
    #[command(after_help = "\
Examples:
  opsqueue ops logs 01920b6c-…
  opsqueue ops logs 01920b6c-… --follow")]
    Logs {
        #[arg(value_name = "ID")]
        id: String,
        /// Keep printing lines as they come until the operation ends (exit with its outcome)
        #[arg(long)]
        follow: bool,
    },
    /// Cancel an operation (a running one is stopped, its processes killed)
    #[command(after_help = "\
Examples:
  opsqueue ops cancel 01920b6c-…
  opsqueue ops cancel 01920b6c-… --wait")]
    Cancel {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run a failed or cancelled operation again
    #[command(after_help = "\
Examples:
  opsqueue ops retry 01920b6c-…
  opsqueue ops retry 01920b6c-… --follow")]
    Retry {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Wait until every operation named ends; exit with the worst outcome
    #[command(after_help = "\
Examples:
  opsqueue ops wait 01920b6c-…
  opsqueue ops wait \"$A\" \"$B\" --timeout 10m")]
    Wait {
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
        /// Stop waiting after this long and exit 3
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// On Ctrl-C, cancel the operations still running
        #[arg(long)]
        cancel_on_interrupt: bool,
    },
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
    /// An operation type (family.verb)
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub source: Option<String>,
    /// e.g. pm2:web, systemd:nginx.service
    #[arg(long)]
    pub resource: Option<String>,
    /// Created within this long (1h, 30m, 2d) or since this time (RFC 3339)
    #[arg(long, value_name = "AGE|TIME", value_parser = parse_since)]
    pub since: Option<String>,
    /// How many (the API pages by 500)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Example:\n  opsqueue targets ls")]
pub enum TargetsCommand {
    /// Every target with its status and the workers serving it
    ///
    /// The registry of GET /api/v1/targets: status (online, offline,
    /// unknown), workers and their drivers, the newest heartbeat, pending
    /// and running counts, role.
    #[command(after_help = "\
Examples:
  opsqueue targets ls
  opsqueue targets ls -o json")]
    Ls,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "Example:\n  opsqueue schedules ls -o json | jq -r '.items[].name'")]
pub enum SchedulesCommand {
    /// Every schedule: its cron, the operation it fires and when it last fired
    #[command(after_help = "\
Examples:
  opsqueue schedules ls")]
    Ls,
}

/// A command on one named object, firing an operation.
#[derive(Debug, Args)]
pub struct OnName {
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub fire: FireArgs,
}

#[derive(Debug, Args)]
pub struct TargetOnly {
    /// Which host (default: local)
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  opsqueue pm2 restart web
  opsqueue pm2 start web script=/srv/web/server.js instances:=2 --wait
  opsqueue pm2 set web instances:=4 max_memory_restart=300M --wait
  opsqueue pm2 logs web --lines 50
  opsqueue pm2 ls")]
pub enum Pm2Command {
    /// Start an app: an existing one by name, or a new one from spec fields (script=…)
    #[command(after_help = "\
Examples:
  opsqueue pm2 start web
  opsqueue pm2 start web script=/srv/web/server.js 'args:=[\"--port\",\"8080\"]' instances:=2")]
    Start {
        #[arg(value_name = "NAME")]
        name: String,
        /// Spec fields for a new app: script=…, interpreter=…, cwd=…, args:=[…], env:={…}, instances:=N
        #[arg(value_name = "FIELD", value_parser = parse_field)]
        fields: Vec<(String, Value)>,
        #[command(flatten)]
        fire: FireArgs,
    },
    /// Change an app's settings without deleting it (pm2 reloads it; the previous settings come back if it does not come up)
    #[command(after_help = "\
Examples:
  opsqueue pm2 set web instances:=4 --wait
  opsqueue pm2 set web 'args:=[\"--port\",\"8081\"]' 'env:={\"LOG_LEVEL\":\"debug\"}' autorestart:=false
  opsqueue pm2 set web max_memory_restart=300M log_date_format='YYYY-MM-DD HH:mm Z'")]
    Set {
        #[arg(value_name = "NAME")]
        name: String,
        /// Settings: instances:=N, env:={…} (variables to set), args:=[…], autorestart:=BOOL, max_memory_restart=150M, log_date_format=…
        #[arg(value_name = "FIELD", value_parser = parse_field, required = true)]
        fields: Vec<(String, Value)>,
        #[command(flatten)]
        fire: FireArgs,
    },
    /// Stop an app
    #[command(after_help = "Example:\n  opsqueue pm2 stop web --wait")]
    Stop(OnName),
    /// Restart an app
    #[command(after_help = "Example:\n  opsqueue pm2 restart web --wait")]
    Restart(OnName),
    /// Reload an app (zero-downtime in cluster mode)
    #[command(after_help = "Example:\n  opsqueue pm2 reload web --wait")]
    Reload(OnName),
    /// Delete an app
    #[command(after_help = "Example:\n  opsqueue pm2 delete web --wait")]
    Delete(OnName),
    /// Read an app's last log lines (fires pm2.logs and prints its result)
    #[command(after_help = "Example:\n  opsqueue pm2 logs web --lines 200")]
    Logs {
        #[arg(value_name = "NAME")]
        name: String,
        /// Lines of each stream (default 100, at most 1000)
        #[arg(long)]
        lines: Option<u32>,
        #[arg(long)]
        target: Option<String>,
        /// Stop waiting after this long and exit 3
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// The apps as last observed
    #[command(after_help = "Example:\n  opsqueue pm2 ls")]
    Ls(TargetOnly),
    /// One app as last observed
    #[command(after_help = "Example:\n  opsqueue pm2 get web -o json")]
    Get {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  opsqueue systemd restart nginx.service
  opsqueue systemd logs nginx --lines 50
  opsqueue systemd ls")]
pub enum SystemdCommand {
    /// Start a unit
    #[command(after_help = "Example:\n  opsqueue systemd start nginx.service --wait")]
    Start(OnName),
    /// Stop a unit
    #[command(after_help = "Example:\n  opsqueue systemd stop nginx.service --wait")]
    Stop(OnName),
    /// Restart a unit
    #[command(after_help = "Example:\n  opsqueue systemd restart nginx.service --wait")]
    Restart(OnName),
    /// Reload a unit
    #[command(after_help = "Example:\n  opsqueue systemd reload nginx.service")]
    Reload(OnName),
    /// Enable a unit
    #[command(after_help = "Example:\n  opsqueue systemd enable pb-myapp.service")]
    Enable(OnName),
    /// Disable a unit
    #[command(after_help = "Example:\n  opsqueue systemd disable pb-myapp.service")]
    Disable(OnName),
    /// Observe a unit now (systemd.status)
    #[command(
        after_help = "Example:\n  opsqueue systemd status nginx --wait && opsqueue systemd get nginx"
    )]
    Status(OnName),
    /// Read a unit's journal (fires systemd.logs and prints its result)
    #[command(after_help = "Example:\n  opsqueue systemd logs nginx --lines 50 --since 1h")]
    Logs {
        #[arg(value_name = "UNIT")]
        unit: String,
        /// The last this many lines (default 100)
        #[arg(long)]
        lines: Option<u32>,
        /// Only lines from this long ago (1h) or this time (RFC 3339) on
        #[arg(long, value_name = "AGE|TIME", value_parser = parse_since)]
        since: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Stop waiting after this long and exit 3
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// The units as last observed, and those opsqueue installed
    #[command(after_help = "Example:\n  opsqueue systemd ls")]
    Ls(TargetOnly),
    /// One unit as last observed
    #[command(after_help = "Example:\n  opsqueue systemd get nginx -o json")]
    Get {
        #[arg(value_name = "UNIT")]
        unit: String,
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  opsqueue caddy add example.com 127.0.0.1:8090 --wait
  opsqueue caddy remove example.com
  opsqueue caddy ls")]
pub enum CaddyCommand {
    /// Proxy a domain to an upstream on this host or a private network
    #[command(after_help = "Example:\n  opsqueue caddy add example.com 127.0.0.1:8090 --wait")]
    Add {
        #[arg(value_name = "DOMAIN")]
        domain: String,
        /// host:port
        #[arg(value_name = "UPSTREAM")]
        upstream: String,
        #[command(flatten)]
        fire: FireArgs,
    },
    /// Remove a site
    #[command(after_help = "Example:\n  opsqueue caddy remove example.com --wait")]
    Remove(OnName),
    /// Re-apply every managed site
    #[command(after_help = "Example:\n  opsqueue caddy reload --wait")]
    Reload {
        #[command(flatten)]
        fire: FireArgs,
    },
    /// The sites as last observed, and those opsqueue manages
    #[command(after_help = "Example:\n  opsqueue caddy ls")]
    Ls(TargetOnly),
}

/// A Proxmox guest: its node (name or id) and vmid.
#[derive(Debug, Args)]
pub struct Guest {
    /// The registered node: its name (as in `opsqueue proxmox nodes`) or id
    #[arg(value_name = "NODE")]
    pub node: String,
    #[arg(value_name = "VMID")]
    pub vmid: u32,
    /// qemu or lxc (default: as last observed)
    #[arg(long, value_name = "qemu|lxc")]
    pub guest_type: Option<String>,
    /// More body fields: force:=true, timeout:=60, …
    #[arg(value_name = "FIELD", value_parser = parse_field)]
    pub fields: Vec<(String, Value)>,
    #[command(flatten)]
    pub fire: FireArgs,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  opsqueue proxmox start lab 100 --wait
  opsqueue proxmox shutdown lab 100 timeout:=120 force:=true
  opsqueue proxmox migrate lab 100 --to pve2 --online --follow
  opsqueue proxmox nodes")]
pub enum ProxmoxCommand {
    /// Start a guest
    #[command(after_help = "Example:\n  opsqueue proxmox start lab 100 --wait")]
    Start(Guest),
    /// Stop a guest (force:=true to skip the graceful attempt)
    #[command(after_help = "Example:\n  opsqueue proxmox stop lab 100 force:=true")]
    Stop(Guest),
    /// Shut a guest down (timeout:=SECONDS, force:=true)
    #[command(after_help = "Example:\n  opsqueue proxmox shutdown lab 100 timeout:=120")]
    Shutdown(Guest),
    /// Reboot a guest (the API's restart route)
    #[command(after_help = "Example:\n  opsqueue proxmox reboot lab 100 --wait")]
    Reboot(Guest),
    /// Suspend a guest
    #[command(after_help = "Example:\n  opsqueue proxmox suspend lab 100")]
    Suspend(Guest),
    /// Resume a guest
    #[command(after_help = "Example:\n  opsqueue proxmox resume lab 100")]
    Resume(Guest),
    /// Migrate a guest to another PVE node of its cluster
    #[command(
        after_help = "Example:\n  opsqueue proxmox migrate lab 100 --to pve2 --online --follow"
    )]
    Migrate {
        #[command(flatten)]
        guest: Guest,
        /// The PVE node to move it to
        #[arg(long = "to", value_name = "PVE_NODE", required = true)]
        to: String,
        /// Live-migrate a running VM
        #[arg(long)]
        online: bool,
        /// Restart-migrate a running container
        #[arg(long)]
        restart: bool,
    },
    /// The registered nodes and their last observed status
    #[command(after_help = "Example:\n  opsqueue proxmox nodes")]
    Nodes,
}

/// `10m`, `1h30m`, `90s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (try 90s, 10m, 1h30m)"))
}

/// `--since`: an age (`1h`: that long before now) or a time (RFC 3339),
/// as the RFC 3339 UTC time the API takes.
pub fn parse_since(text: &str) -> Result<String, String> {
    if let Ok(age) = parse_duration(text) {
        let age = chrono::Duration::from_std(age).map_err(|_| "too long ago".to_owned())?;
        return Ok((Utc::now() - age).to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
        })
        .map_err(|_| "give an age (30m, 1h, 2d) or a time (2024-05-01T12:00:00Z)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn since_takes_an_age_or_a_time() {
        let an_hour_ago = parse_since("1h").unwrap();
        let parsed = DateTime::parse_from_rfc3339(&an_hour_ago).unwrap();
        let age = Utc::now() - parsed.with_timezone(&Utc);
        assert!((3590..=3610).contains(&age.num_seconds()), "{an_hour_ago}");
        assert_eq!(
            parse_since("2024-05-01T14:00:00+02:00").unwrap(),
            "2024-05-01T12:00:00Z"
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        fn check(command: &clap::Command, path: &str) {
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(help.contains("Example"), "`{path} --help` has no example");
                check(sub, &path);
            }
        }
        check(&Cli::command(), "opsqueue");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn run_takes_fields_after_the_type_and_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "opsqueue",
            "run",
            "diag.sleep",
            "seconds:=2",
            "--follow",
            "child:=true",
            "--target",
            "web-2",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.kind, "diag.sleep");
        assert_eq!(run.fields.len(), 2);
        assert!(run.fire.wait.follow);
        assert_eq!(run.fire.target.as_deref(), Some("web-2"));
    }
}
