//! Looking at a service: its health (`GET /api/health` on its port), its
//! health through Caddy with its domain's `Host` (`pocketbase.verify`), and
//! the observation the reads answer from: the unit's state (through the
//! systemd driver), memory and CPU (systemd's accounting, else the main
//! process's `/proc` entries), the Caddy route, the last health answer.
//!
//! Waits (health, verify) poll every half second until their own deadline
//! (`[pocketbase] health_timeout_secs`) and stop at once when the operation
//! is cancelled.

use std::net::Ipv4Addr;
use std::time::Duration;

use opsqueue_shared::families::caddy::{SiteSpec, Upstream, site_id};
use opsqueue_shared::families::pocketbase::{FAMILY, Health, SERVICE_KIND, ServiceName, Verify};
use opsqueue_shared::families::systemd::{SystemdAction, UnitRef, UnitVerb};
use opsqueue_shared::names::Domain;
use opsqueue_shared::store::observation_list;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Pocketbase, codes};
use crate::context::Context;
use crate::drivers::caddy::sites::site_route;
use crate::drivers::driver::{Driver, DriverError, Outcome};

const POLL: Duration = Duration::from_millis(500);

/// One answer of a health endpoint: `Ok(body)` for a 200, else why not.
type Answer = Result<Value, String>;

/// Whether a body is PocketBase's health answer.
fn healthy(status: StatusCode, body: &str) -> Answer {
    if status != StatusCode::OK {
        return Err(format!(
            "answered {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    let value: Value = serde_json::from_str(body).map_err(|_| {
        format!(
            "answered 200 but not PocketBase's health JSON: {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    if value["code"] != 200 {
        return Err(format!("answered {value}"));
    }
    Ok(value)
}

/// The resident memory (bytes) and CPU time (ns) of a process, from /proc.
fn proc_usage(pid: i64) -> (Option<u64>, Option<u64>) {
    let memory = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            // Fields after the command (which may hold spaces) in parentheses.
            let rest = text.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            (ticks > 0).then(|| (utime + stime) * 1_000_000_000 / ticks as u64)
        });
    (memory, cpu)
}

/// The inodes of the TCP sockets listening on 127.0.0.1:`port`, from
/// `/proc/net/tcp` (the kernel prints the address as the host-order value
/// of its network-order bytes).
fn listening_inodes(port: u16) -> Vec<u64> {
    let local = format!(
        "{:08X}:{port:04X}",
        u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets())
    );
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A");
            listening.then(|| fields.get(9)?.parse().ok()).flatten()
        })
        .collect()
}

/// Whether process `pid` holds one of `inodes`: `None` when its file
/// descriptors cannot be read (another user's process, to a worker that
/// is not root), so nothing can be said.
fn holds_socket(pid: i64, inodes: &[u64]) -> Option<bool> {
    let entries = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return None,
        Err(_) => return Some(false),
    };
    Some(entries.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                let text = target.to_str()?;
                text.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    }))
}

impl Pocketbase {
    async fn health_once(&self, port: u16) -> Answer {
        let url = format!("http://127.0.0.1:{port}/api/health");
        match self.http.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                healthy(status, &body)
            }
            Err(e) => Err(format!("no answer at {url}: {e}")),
        }
    }

    /// Calls `attempt` every [`POLL`] until it answers `Ok` or the health
    /// timeout passes (then `Err` with its last answer).
    async fn poll<F, Fut>(
        &self,
        ctx: &Context,
        mut attempt: F,
    ) -> Result<Result<Value, String>, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        let deadline = Instant::now() + Duration::from_secs(self.config.health_timeout_secs);
        loop {
            let answer = tokio::select! {
                answer = attempt() => answer,
                () = ctx.cancelled() => return Err(DriverError::cancelled()),
            };
            match answer {
                Ok(value) => return Ok(Ok(value)),
                Err(last) if Instant::now() >= deadline => return Ok(Err(last)),
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = ctx.cancelled() => return Err(DriverError::cancelled()),
            }
        }
    }

    /// `pocketbase.health`.
    pub(super) async fn health(
        &self,
        ctx: &Context,
        health: &Health,
    ) -> Result<Outcome, DriverError> {
        let port = health.port.get();
        let ours = || async {
            let answer = self.health_once(port).await?;
            self.answered_by_the_unit(ctx, &health.name, port).await?;
            Ok(answer)
        };
        match self.poll(ctx, ours).await? {
            Ok(answer) => Ok(Outcome::unchanged()
                .with("name", &health.name)
                .with("health", answer)),
            Err(last) => Err(DriverError::permanent(
                codes::HEALTH,
                format!(
                    "{} did not answer its health check within {}s: {last}",
                    health.name, self.config.health_timeout_secs
                ),
            )),
        }
    }

    /// Whether the process listening on `port` is the service unit's main
    /// process: an answer from any other (a program that took the port
    /// after the check) is not this service's health.
    async fn answered_by_the_unit(
        &self,
        ctx: &Context,
        name: &ServiceName,
        port: u16,
    ) -> Result<(), String> {
        let status = SystemdAction::Unit(UnitVerb::Status, UnitRef { unit: name.unit() });
        let state = match self.systemd.execute(&status, ctx).await {
            Ok(outcome) => outcome.result.get("state").cloned().unwrap_or(Value::Null),
            Err(e) => {
                return Err(format!(
                    "cannot read {}'s state: {}",
                    name.unit(),
                    e.message
                ));
            }
        };
        let Some(pid) = state["main_pid"].as_i64().filter(|pid| *pid > 0) else {
            return Err(format!(
                "port {port} answers, but {} has no main process ({})",
                name.unit(),
                state["active_state"]
            ));
        };
        match holds_socket(pid, &listening_inodes(port)) {
            Some(false) => Err(format!(
                "port {port} answers, but not from {}'s main process (pid {pid})",
                name.unit()
            )),
            Some(true) | None => Ok(()),
        }
    }

    /// One request for `/api/health` through Caddy with `domain` as `Host`.
    async fn through_caddy(&self, domain: &Domain) -> Answer {
        let url = format!("{}/api/health", self.config.proxy_url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::HOST, domain.as_str())
            .send()
            .await
            .map_err(|e| format!("no answer from Caddy at {url}: {e}"))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            return Err(format!(
                "Caddy answered {status} to {location:?} (automatic HTTPS): point [pocketbase] proxy_url at a plain-HTTP listener"
            ));
        }
        let body = response.text().await.unwrap_or_default();
        healthy(status, &body)
    }

    /// `pocketbase.verify`.
    pub(super) async fn verify(
        &self,
        ctx: &Context,
        verify: &Verify,
    ) -> Result<Outcome, DriverError> {
        match self
            .poll(ctx, || self.through_caddy(&verify.domain))
            .await?
        {
            Ok(answer) => Ok(Outcome::unchanged()
                .with("name", &verify.name)
                .with("domain", &verify.domain)
                .with("health", answer)),
            Err(last) => Err(DriverError::permanent(
                codes::VERIFY,
                format!(
                    "Caddy did not serve {}'s health at {} within {}s: {last}",
                    verify.domain, self.config.proxy_url, self.config.health_timeout_secs
                ),
            )),
        }
    }

    /// Whether Caddy routes `domain` to `port` as opsqueue set it up.
    async fn caddy_route(&self, ctx: &Context, domain: &Domain, port: u16) -> &'static str {
        let Some(admin) = &self.caddy else {
            return "unknown";
        };
        let Ok(upstream) = Upstream::parse(&format!("127.0.0.1:{port}")) else {
            return "unknown";
        };
        let desired = site_route(&SiteSpec {
            domain: domain.clone(),
            upstream,
        });
        match admin
            .request(ctx, Method::GET, &format!("/id/{}", site_id(domain)), None)
            .await
        {
            Ok(answer) if answer.status.is_success() && answer.body == desired => "present",
            Ok(answer) if answer.status.is_success() => "drifted",
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => "missing",
            _ => "unknown",
        }
    }

    /// The CPU share since the previous observation, from its cumulative
    /// CPU time and when it was taken (`None` on a remote worker).
    async fn cpu_percent(
        &self,
        ctx: &Context,
        name: &ServiceName,
        cpu_nsec: Option<u64>,
    ) -> Option<f64> {
        let cpu_nsec = cpu_nsec?;
        let (target, name) = (ctx.target().to_owned(), name.to_string());
        // The previous observation is read from a store beside the worker;
        // a remote worker (the store behind the API) reports no share.
        let previous = self
            .link
            .store()?
            .call(move |s| {
                s.read(|c| observation_list(c, &target, FAMILY, SERVICE_KIND, Some(&name)))
            })
            .await
            .ok()?
            .into_iter()
            .next()?;
        let before = previous.data["cpu_usage_nsec"].as_u64()?;
        let elapsed = (opsqueue_shared::time::now() - previous.observed_at).num_milliseconds();
        if elapsed <= 0 || cpu_nsec < before {
            return None;
        }
        let percent = (cpu_nsec - before) as f64 / (elapsed as f64 * 1e6) * 100.0;
        Some((percent * 10.0).round() / 10.0)
    }

    /// A service's runtime state, for its observation. Never fails: what
    /// cannot be read is `null` (with the reason in `unit_error`).
    pub(super) async fn observe(&self, ctx: &Context, name: &ServiceName, record: &Value) -> Value {
        let status = SystemdAction::Unit(UnitVerb::Status, UnitRef { unit: name.unit() });
        let (unit, unit_error) = match self.systemd.execute(&status, ctx).await {
            Ok(outcome) => (
                outcome.result.get("state").cloned().unwrap_or(Value::Null),
                None,
            ),
            Err(e) => (Value::Null, Some(e.message)),
        };
        let main_pid = unit["main_pid"].as_i64();
        let (proc_memory, proc_cpu) = main_pid.map_or((None, None), proc_usage);
        let memory = unit["memory_bytes"].as_u64().or(proc_memory);
        let cpu_nsec = unit["cpu_usage_nsec"].as_u64().or(proc_cpu);
        let cpu_percent = self.cpu_percent(ctx, name, cpu_nsec).await;
        let port = record["port"].as_u64().and_then(|p| u16::try_from(p).ok());
        let caddy = match (record["domain"].as_str().map(Domain::parse), port) {
            (Some(Ok(domain)), Some(port)) => self.caddy_route(ctx, &domain, port).await,
            _ => "none",
        };
        let health = match port {
            Some(port) => match self.health_once(port).await {
                Ok(answer) => json!({"ok": true, "answer": answer}),
                Err(error) => json!({"ok": false, "error": error}),
            },
            None => Value::Null,
        };
        let status = unit["active_state"].as_str().unwrap_or("unknown");
        json!({
            "status": status,
            "version": record["version"],
            "unit": {
                "name": name.unit(),
                "active_state": unit["active_state"],
                "sub_state": unit["sub_state"],
                "main_pid": unit["main_pid"],
                "restarts": unit["restarts"],
                "active_since": unit["active_since"],
            },
            "unit_error": unit_error,
            "memory_bytes": memory,
            "cpu_usage_nsec": cpu_nsec,
            "cpu_percent": cpu_percent,
            "caddy": caddy,
            "health": health,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pocketbase_s_own_health_answer_counts() {
        assert!(
            healthy(
                StatusCode::OK,
                r#"{"message":"API is healthy.","code":200,"data":{}}"#
            )
            .is_ok()
        );
        assert!(healthy(StatusCode::OK, "").is_err());
        assert!(healthy(StatusCode::OK, "no site").is_err());
        assert!(healthy(StatusCode::BAD_GATEWAY, "").is_err());
    }

    #[test]
    fn a_listening_socket_is_found_on_its_port_and_in_its_process_only() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let inodes = listening_inodes(port);
        assert_eq!(inodes.len(), 1, "{port}");
        assert_eq!(holds_socket(std::process::id() as i64, &inodes), Some(true));
        assert_ne!(holds_socket(1, &inodes), Some(true));
        drop(listener);
        assert!(listening_inodes(port).is_empty());
    }

    #[test]
    fn this_process_s_memory_and_cpu_are_read_from_proc() {
        let (memory, cpu) = proc_usage(std::process::id() as i64);
        assert!(memory.is_some_and(|m| m > 0));
        assert!(cpu.is_some());
        assert_eq!(proc_usage(i64::from(i32::MAX)), (None, None));
    }
}
