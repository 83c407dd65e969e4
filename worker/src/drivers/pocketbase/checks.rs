//! What create would refuse, checked on the host (`pocketbase.check`,
//! which fails, and `pocketbase.validate`, which reports), and the host's
//! own readiness (`pocketbase.system.validate`). Nothing here changes the
//! host: a port is tried by binding it and letting go at once, a directory
//! by creating and removing a file in it.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use opsqueue_shared::families::pocketbase::{
    FAMILY, SERVICE_KIND, SYSTEM_KIND, SYSTEM_NAME, ServiceSpec,
};
use opsqueue_shared::store::{ManagedObject, StateEffect};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Pocketbase, codes, versions};
use crate::context::Context;
use crate::drivers::caddy::sites::sites_in;
use crate::drivers::driver::{DriverError, Outcome, Probe};

/// One finding about a field, in the seed's shape.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub field: &'static str,
    pub message: String,
    pub code: &'static str,
}

fn finding(field: &'static str, code: &'static str, message: String) -> Finding {
    Finding {
        field,
        message,
        code,
    }
}

/// The port and domain of `spec` where another service's record already
/// holds them.
fn taken_by_another(records: &[ManagedObject], spec: &ServiceSpec) -> Vec<Finding> {
    let others = || records.iter().filter(|r| r.name != spec.name.as_str());
    let mut taken = Vec::new();
    let port = spec.port.get();
    if let Some(other) = others().find(|r| r.spec["port"] == json!(port)) {
        taken.push(finding(
            "port",
            "PORT_TAKEN",
            format!("port {port} belongs to the service {}", other.name),
        ));
    }
    if let Some(domain) = &spec.domain
        && let Some(other) = others().find(|r| r.spec["domain"] == json!(domain))
    {
        taken.push(finding(
            "domain",
            "DOMAIN_TAKEN",
            format!("{domain} belongs to the service {}", other.name),
        ));
    }
    taken
}

/// The failure of a step that found `errors`: `service_invalid`, each
/// finding as `field (CODE): message`.
fn refusal(errors: &[Finding]) -> DriverError {
    let list: Vec<String> = errors
        .iter()
        .map(|e| format!("{} ({}): {}", e.field, e.code, e.message))
        .collect();
    DriverError::permanent(codes::SERVICE_INVALID, list.join("; "))
}

/// A system check, for `validate/system` and `system/health`.
#[derive(Debug, Clone, Serialize)]
struct SystemCheck {
    name: &'static str,
    ok: bool,
    message: String,
}

/// Whether a path can be written: it, or the nearest directory above it
/// that exists (where it would be created), by access(2), creating nothing.
fn writable(path: &Path) -> Result<String, String> {
    let mut at = path;
    while !at.exists() {
        at = at
            .parent()
            .ok_or_else(|| format!("no directory above {}", path.display()))?;
    }
    let c_path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} holds a NUL byte", at.display()))?;
    // SAFETY: access(2) reads a NUL-terminated path and nothing else.
    if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!(
            "cannot write {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        ));
    }
    if at == path {
        Ok(format!("{} is writable", path.display()))
    } else {
        Ok(format!(
            "{} will be created in {}",
            path.display(),
            at.display()
        ))
    }
}

/// Whether `program` names something that can be run (a path, or a name on
/// `PATH`).
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return is_exec(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| is_exec(&dir.join(program))))
}

impl Pocketbase {
    /// Everything create would refuse (errors) or should know (warnings).
    async fn findings(
        &self,
        ctx: &Context,
        spec: &ServiceSpec,
    ) -> Result<(Vec<Finding>, Vec<Finding>), DriverError> {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let name = &spec.name;
        let records = self.records(ctx, SERVICE_KIND, None).await?;
        if records.iter().any(|r| r.name == name.as_str()) {
            errors.push(finding(
                "name",
                "DUPLICATE_PROJECT_NAME",
                format!("a service named {name} already exists"),
            ));
        } else if self.paths(name).home.exists() {
            errors.push(finding(
                "name",
                "DIRECTORY_EXISTS",
                format!("{} already exists", self.paths(name).home.display()),
            ));
        }
        if self.config.create_users && self.service_user(name)?.is_some() {
            errors.push(finding(
                "name",
                "USER_EXISTS",
                format!("a system user {} already exists", name.user()),
            ));
        }
        let port = spec.port.get();
        let taken = taken_by_another(&records, spec);
        if !taken.iter().any(|t| t.field == "port")
            && let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        {
            errors.push(finding(
                "port",
                "PORT_IN_USE",
                format!("port {port} is already in use on 127.0.0.1: {e}"),
            ));
        }
        errors.extend(taken);
        if let Some(domain) = &spec.domain {
            match &self.caddy {
                None => errors.push(finding(
                    "domain",
                    "CADDY_DISABLED",
                    "a domain needs the caddy family: set [caddy] enabled = true".into(),
                )),
                Some(admin) => match admin
                    .expect_ok(ctx, Method::GET, "/config/apps/http/servers", None)
                    .await
                {
                    Ok(servers) => {
                        if let Some(site) = sites_in(&servers).get(domain.as_str()) {
                            errors.push(finding(
                                "domain",
                                "DOMAIN_IN_USE",
                                format!("Caddy already serves {domain} (server {})", site.server),
                            ));
                        }
                    }
                    Err(e) if e.code == crate::drivers::driver::codes::CANCELLED => return Err(e),
                    Err(e) => warnings.push(finding(
                        "domain",
                        "CADDY_UNREACHABLE",
                        format!(
                            "could not ask Caddy whether it serves {domain}: {}",
                            e.message
                        ),
                    )),
                },
            }
        }
        let binary = spec.version.binary(&self.config.versions_dir);
        if !binary.is_file() {
            errors.push(finding(
                "version",
                "VERSION_NOT_CACHED",
                format!(
                    "version {} is not in the version cache ({}); install it with POST /api/v1/pocketbase/versions",
                    spec.version,
                    binary.display()
                ),
            ));
        }
        Ok((errors, warnings))
    }

    /// `pocketbase.check`: create's first step.
    pub(super) async fn check(
        &self,
        ctx: &Context,
        spec: &ServiceSpec,
    ) -> Result<Outcome, DriverError> {
        let (errors, warnings) = self.findings(ctx, spec).await?;
        for warning in &warnings {
            ctx.step(format!("warning: {}: {}", warning.field, warning.message));
        }
        if !errors.is_empty() {
            return Err(refusal(&errors));
        }
        Ok(Outcome::unchanged()
            .with("valid", true)
            .with("warnings", warnings))
    }

    /// Create's second look, under the lock every `home.create` shares: a
    /// port or domain another service's record claimed since the check
    /// (two creates checked at once) refuses this one before it changes
    /// anything, so a service never takes another's health for its own.
    pub(super) async fn refuse_taken(
        &self,
        ctx: &Context,
        spec: &ServiceSpec,
    ) -> Result<(), DriverError> {
        let records = self.records(ctx, SERVICE_KIND, None).await?;
        let taken = taken_by_another(&records, spec);
        if taken.is_empty() {
            Ok(())
        } else {
            Err(refusal(&taken))
        }
    }

    /// `pocketbase.validate`: the same findings, as a result.
    pub(super) async fn validate(
        &self,
        ctx: &Context,
        spec: &ServiceSpec,
    ) -> Result<Outcome, DriverError> {
        let (errors, warnings) = self.findings(ctx, spec).await?;
        Ok(Outcome::unchanged()
            .with("valid", errors.is_empty())
            .with("errors", errors)
            .with("warnings", warnings))
    }

    /// `pocketbase.system.validate`: the host's readiness, kept for
    /// `GET /api/v1/pocketbase/system/health`.
    pub(super) async fn system_validate(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let mut checks = Vec::new();
        let systemd = self.systemd.probe(ctx).await;
        checks.push(SystemCheck {
            name: "systemd",
            ok: systemd.is_ok(),
            message: match systemd {
                Ok(state) => state,
                Err(e) => e.message,
            },
        });
        let caddy = match &self.caddy {
            None => SystemCheck {
                name: "caddy",
                ok: true,
                message: "the caddy family is disabled: services cannot have a domain".into(),
            },
            Some(admin) => match admin.expect_ok(ctx, Method::GET, "/config/", None).await {
                Ok(_) => SystemCheck {
                    name: "caddy",
                    ok: true,
                    message: format!("Caddy's admin API answers at {}", admin.base()),
                },
                Err(e) => SystemCheck {
                    name: "caddy",
                    ok: false,
                    message: e.message,
                },
            },
        };
        checks.push(caddy);
        for (name, path) in [
            ("base_dir", &self.config.base_dir),
            ("versions_dir", &self.config.versions_dir),
        ] {
            let result = writable(path);
            checks.push(SystemCheck {
                name,
                ok: result.is_ok(),
                message: result.unwrap_or_else(|e| e),
            });
        }
        let cached = versions::cached(&self.config.versions_dir);
        checks.push(SystemCheck {
            name: "binary_source",
            ok: !cached.is_empty(),
            message: if cached.is_empty() {
                format!(
                    "no version in {}; install one with POST /api/v1/pocketbase/versions",
                    self.config.versions_dir.display()
                )
            } else {
                format!("cached: {}", cached.join(", "))
            },
        });
        let users = if !self.config.create_users {
            SystemCheck {
                name: "service_users",
                ok: true,
                message: "create_users is off: services run without users of their own".into(),
            }
        } else {
            let program = self.config.useradd[0].clone();
            let passwd = writable(&self.config.passwd_file);
            match (runnable(&program), passwd) {
                (true, Ok(_)) => SystemCheck {
                    name: "service_users",
                    ok: true,
                    message: format!(
                        "{program} is there and {} is writable",
                        self.config.passwd_file.display()
                    ),
                },
                (false, _) => SystemCheck {
                    name: "service_users",
                    ok: false,
                    message: format!("{program} is not installed"),
                },
                (true, Err(e)) => SystemCheck {
                    name: "service_users",
                    ok: false,
                    message: e,
                },
            }
        };
        checks.push(users);
        let valid = checks.iter().all(|c| c.ok);
        let data = json!({"valid": valid, "checks": checks});
        ctx.record(StateEffect::Observed {
            family: FAMILY.into(),
            kind: SYSTEM_KIND.into(),
            name: SYSTEM_NAME.into(),
            data: data.clone(),
        });
        let mut outcome = Outcome::unchanged();
        if let Value::Object(fields) = data {
            outcome.result = fields;
        }
        Ok(outcome)
    }
}
