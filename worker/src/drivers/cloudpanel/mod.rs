//! The `cloudpanel` driver: sites, certificates, databases and panel users
//! through CloudPanel's `clpctl` (`[cloudpanel] clpctl`, an argument
//! vector), each call bounded by `[cloudpanel] command_timeout_secs`.
//!
//! Invariants:
//! - **Passwords never reach a log or a result.** clpctl takes them as
//!   `--…Password=` arguments (so `ps` shows them to root while it runs);
//!   every command of an action that carries one redacts it from the logged
//!   argument vector, the streamed output and the captured output, which
//!   error messages are made of.
//! - **stdin is closed** (the runner gives `/dev/null`) and `site:delete`
//!   always gets `--force`: clpctl would otherwise wait for "yes".
//! - **Already done is not an error.** clpctl has no `site:list`: a site
//!   exists when `<home_dir>/<site user>/htdocs/<domain>` does (CloudPanel
//!   creates the site user's home with the site), so adding an existing
//!   site or deleting an absent one completes `changed: false`; so do
//!   adding a user `clpctl user:list` shows and deleting one it does not.
//!   `db:add` cannot be checked (clpctl lists no databases).
//! - **A certificate's private key** reaches clpctl as a 0600 file that is
//!   removed when the command ends (see `certificate`), never as an argument.
//! - Sites opsqueue added are recorded as managed (their spec without the
//!   password), and forgotten when deleted.

mod certificate;

use std::path::PathBuf;
use std::time::Duration;

use opsqueue_shared::Config;
use opsqueue_shared::families::cloudpanel::{
    CloudpanelAction, DbAdd, SiteAdd, SiteDelete, SiteType, SiteUser, UserAdd, UserDelete, UserName,
};
use opsqueue_shared::names::Domain;
use opsqueue_shared::store::StateEffect;

use crate::context::Context;
use crate::drivers::driver::{AnyDriver, Driver, DriverError, Outcome};
use crate::link::Link;
use crate::runner::{CommandOutput, CommandSpec};

/// Error codes of this driver.
pub mod codes {
    /// clpctl refused the command (its message, passwords redacted).
    pub const CLPCTL_FAILED: &str = "clpctl_failed";
    /// clpctl could not reach the database or another service: retryable.
    pub const CLPCTL_UNAVAILABLE: &str = "clpctl_unavailable";
    /// The domain belongs to a site of another site user.
    pub const SITE_CONFLICT: &str = "site_conflict";
    /// A database or a certificate was asked for on a site that does not
    /// exist.
    pub const SITE_NOT_FOUND: &str = "site_not_found";
    /// The files an uploaded certificate is handed over in could not be
    /// written: retryable.
    pub const CERTIFICATE_FILES: &str = "cloudpanel_certificate_files";
}

/// clpctl's (PHP's, MySQL's) words for a service it cannot reach.
const UNAVAILABLE_SIGNS: &[&str] = &[
    "Connection refused",
    "SQLSTATE[HY000] [2002]",
    "database is locked",
    "Resource temporarily unavailable",
];

pub struct Cloudpanel {
    clpctl: Vec<String>,
    home_dir: PathBuf,
    command_timeout: Duration,
}

impl Cloudpanel {
    pub fn new(config: &Config) -> Self {
        Self {
            clpctl: config.cloudpanel.clpctl.clone(),
            home_dir: config.cloudpanel.home_dir.clone(),
            command_timeout: Duration::from_secs(config.cloudpanel.command_timeout_secs),
        }
    }

    /// Runs `clpctl <args>`, redacting `secrets`, and classifies a failure.
    async fn clpctl(
        &self,
        ctx: &Context,
        args: Vec<String>,
        secrets: &[&str],
    ) -> Result<CommandOutput, DriverError> {
        let mut spec = CommandSpec::from_argv(&self.clpctl)
            .expect("the configuration refuses an empty cloudpanel.clpctl")
            .args(args)
            .timeout(self.command_timeout);
        for secret in secrets {
            spec = spec.redact(*secret);
        }
        let output = ctx.run(spec).await?;
        if output.success() {
            return Ok(output);
        }
        let unavailable = UNAVAILABLE_SIGNS.iter().any(|sign| output.mentions(sign));
        let message = output.failure_message();
        Err(if unavailable {
            DriverError::retryable(codes::CLPCTL_UNAVAILABLE, message)
        } else {
            DriverError::permanent(codes::CLPCTL_FAILED, message)
        })
    }

    /// The site users whose home holds `htdocs/<domain>`.
    fn site_owners(&self, domain: &Domain) -> Result<Vec<String>, DriverError> {
        let entries = match std::fs::read_dir(&self.home_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DriverError::retryable(
                    "cloudpanel_home_unreadable",
                    format!("{}: {e}", self.home_dir.display()),
                ));
            }
        };
        let mut owners = Vec::new();
        for entry in entries.flatten() {
            if entry.path().join("htdocs").join(domain.as_str()).is_dir() {
                owners.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        owners.sort();
        Ok(owners)
    }

    async fn site_add(&self, site: &SiteAdd, ctx: &Context) -> Result<Outcome, DriverError> {
        let (domain, user) = (&site.domain, site.site_user.as_str());
        let owners = self.site_owners(domain)?;
        let htdocs = self
            .home_dir
            .join(user)
            .join("htdocs")
            .join(domain.as_str());
        let outcome = if owners.iter().any(|o| o == user) {
            ctx.step(format!(
                "{} exists: site {domain} is already there",
                htdocs.display()
            ));
            Outcome::unchanged()
        } else if let Some(other) = owners.first() {
            return Err(DriverError::permanent(
                codes::SITE_CONFLICT,
                format!("site {domain} already exists with site user {other}, not {user}"),
            ));
        } else {
            let password = site.site_user_password.as_str();
            let mut args = vec![
                site.site_type.command().to_owned(),
                format!("--domainName={domain}"),
            ];
            match site.site_type {
                SiteType::Php => {
                    let version = site.php_version.as_ref().expect("checked at parse");
                    let template = site
                        .vhost_template
                        .as_ref()
                        .map_or(SiteAdd::DEFAULT_VHOST_TEMPLATE, |t| t.as_str());
                    args.push(format!("--phpVersion={}", version.as_str()));
                    args.push(format!("--vhostTemplate={template}"));
                }
                SiteType::Nodejs | SiteType::Python => {
                    let (flag, version) = match site.site_type {
                        SiteType::Nodejs => ("nodejsVersion", &site.nodejs_version),
                        _ => ("pythonVersion", &site.python_version),
                    };
                    let version = version.as_ref().expect("checked at parse");
                    let port = site.app_port.expect("checked at parse");
                    args.push(format!("--{flag}={}", version.as_str()));
                    args.push(format!("--appPort={port}"));
                }
                SiteType::ReverseProxy => {
                    let url = site.reverse_proxy_url.as_ref().expect("checked at parse");
                    args.push(format!("--reverseProxyUrl={}", url.as_str()));
                }
                SiteType::Static => {}
            }
            args.push(format!("--siteUser={user}"));
            args.push(format!("--siteUserPassword={password}"));
            self.clpctl(ctx, args, &[password]).await?;
            Outcome::changed()
        };
        let mut spec = serde_json::to_value(site).expect("a site serializes");
        spec.as_object_mut()
            .expect("an object")
            .remove("site_user_password");
        ctx.record(StateEffect::Managed {
            family: "cloudpanel".into(),
            kind: "site".into(),
            name: domain.to_string(),
            spec,
        });
        Ok(outcome
            .with("domain", domain)
            .with("site_user", user)
            .with("htdocs", htdocs))
    }

    async fn site_delete(&self, site: &SiteDelete, ctx: &Context) -> Result<Outcome, DriverError> {
        let domain = &site.domain;
        let outcome = if self.site_owners(domain)?.is_empty() {
            ctx.step(format!(
                "no htdocs for {domain}: the site is already absent"
            ));
            Outcome::unchanged()
        } else {
            let args = vec![
                "site:delete".to_owned(),
                format!("--domainName={domain}"),
                "--force".to_owned(),
            ];
            self.clpctl(ctx, args, &[]).await?;
            Outcome::changed()
        };
        ctx.record(StateEffect::Unmanaged {
            family: "cloudpanel".into(),
            kind: "site".into(),
            name: domain.to_string(),
        });
        Ok(outcome.with("domain", domain))
    }

    async fn db_add(&self, db: &DbAdd, ctx: &Context) -> Result<Outcome, DriverError> {
        if self.site_owners(&db.domain)?.is_empty() {
            return Err(DriverError::permanent(
                codes::SITE_NOT_FOUND,
                format!("no site {} to add a database to", db.domain),
            ));
        }
        let password = db.database_user_password.as_str();
        let args = vec![
            "db:add".to_owned(),
            format!("--domainName={}", db.domain),
            format!("--databaseName={}", db.database_name),
            format!("--databaseUserName={}", db.database_user_name),
            format!("--databaseUserPassword={password}"),
        ];
        self.clpctl(ctx, args, &[password]).await?;
        ctx.record(StateEffect::Managed {
            family: "cloudpanel".into(),
            kind: "database".into(),
            name: db.database_name.to_string(),
            spec: serde_json::json!({
                "domain": db.domain,
                "database_name": db.database_name,
                "database_user_name": db.database_user_name,
            }),
        });
        Ok(Outcome::changed()
            .with("domain", &db.domain)
            .with("database_name", &db.database_name)
            .with("database_user_name", &db.database_user_name))
    }

    /// Every site: the `htdocs/<domain>` directories of the homes under
    /// `home_dir` (clpctl has no `site:list`), as (domain, observation).
    fn sites(&self) -> Result<Vec<(String, serde_json::Value)>, DriverError> {
        let homes = match std::fs::read_dir(&self.home_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DriverError::retryable(
                    "cloudpanel_home_unreadable",
                    format!("{}: {e}", self.home_dir.display()),
                ));
            }
        };
        let mut sites = Vec::new();
        for home in homes.flatten() {
            let user = home.file_name().to_string_lossy().into_owned();
            let Ok(domains) = std::fs::read_dir(home.path().join("htdocs")) else {
                continue;
            };
            for entry in domains.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Only what a site can be named: a domain under a site user.
                let (Ok(domain), Ok(_)) = (Domain::parse(&name), SiteUser::parse(&user)) else {
                    continue;
                };
                if entry.path().is_dir() {
                    sites.push((
                        domain.to_string(),
                        serde_json::json!({
                            "domain": domain,
                            "site_user": user,
                            "root_directory": entry.path(),
                        }),
                    ));
                }
            }
        }
        sites.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(sites)
    }

    /// Observes every site and every panel user.
    async fn list(&self, ctx: &Context) -> Result<Outcome, DriverError> {
        let sites = self.sites()?;
        let output = self.clpctl(ctx, vec!["user:list".into()], &[]).await?;
        let users = listed_rows(&output.stdout_text());
        ctx.step(format!(
            "{} sites and {} panel users observed",
            sites.len(),
            users.len()
        ));
        let counts = (sites.len(), users.len());
        ctx.record(StateEffect::ObservedAll {
            family: "cloudpanel".into(),
            kind: "site".into(),
            items: sites,
        });
        ctx.record(StateEffect::ObservedAll {
            family: "cloudpanel".into(),
            kind: "user".into(),
            items: users,
        });
        Ok(Outcome::unchanged()
            .with("sites", counts.0)
            .with("users", counts.1))
    }

    /// Whether `clpctl user:list` shows the user.
    async fn user_exists(&self, ctx: &Context, name: &UserName) -> Result<bool, DriverError> {
        let output = self.clpctl(ctx, vec!["user:list".into()], &[]).await?;
        Ok(listed_users(&output.stdout_text())
            .iter()
            .any(|u| u == name.as_str()))
    }

    async fn user_add(&self, user: &UserAdd, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &user.user_name;
        let outcome = if self.user_exists(ctx, name).await? {
            ctx.step(format!("user {name} already exists"));
            Outcome::unchanged()
        } else {
            let password = user.password.as_str();
            let mut args = vec![
                "user:add".to_owned(),
                format!("--userName={name}"),
                format!("--email={}", user.email.as_str()),
                format!("--firstName={}", user.first_name.as_str()),
                format!("--lastName={}", user.last_name.as_str()),
                format!("--password={password}"),
                format!("--role={}", user.role.as_str()),
            ];
            if !user.sites.is_empty() {
                let sites: Vec<&str> = user.sites.iter().map(Domain::as_str).collect();
                args.push(format!("--sites={}", sites.join(",")));
            }
            let timezone = user
                .timezone
                .as_ref()
                .map_or(UserAdd::DEFAULT_TIMEZONE, |t| t.as_str());
            args.push(format!("--timezone={timezone}"));
            args.push(format!("--status={}", u8::from(user.active)));
            self.clpctl(ctx, args, &[password]).await?;
            Outcome::changed()
        };
        Ok(outcome
            .with("user_name", name)
            .with("role", user.role.as_str()))
    }

    async fn user_delete(&self, user: &UserDelete, ctx: &Context) -> Result<Outcome, DriverError> {
        let name = &user.user_name;
        let outcome = if self.user_exists(ctx, name).await? {
            let args = vec!["user:delete".to_owned(), format!("--userName={name}")];
            self.clpctl(ctx, args, &[]).await?;
            Outcome::changed()
        } else {
            ctx.step(format!("user {name} is already absent"));
            Outcome::unchanged()
        };
        Ok(outcome.with("user_name", name))
    }
}

/// The rows of `clpctl user:list`'s table, each as (user name, an object of
/// its cells keyed by their headers in snake case: `user_name`, `email`,
/// `first_name`, `role`, `status`, …). The table's layout is the stand-in's
/// assumption of the real one (see `tests/fakes/clpctl`).
fn listed_rows(table: &str) -> Vec<(String, serde_json::Value)> {
    let (header, body) = table_cells(table);
    let keys: Vec<String> = header
        .iter()
        .map(|cell| {
            // "User Name" → user_name, "E-Mail" → email.
            cell.to_ascii_lowercase()
                .replace('-', "")
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|word| !word.is_empty())
                .collect::<Vec<_>>()
                .join("_")
        })
        .collect();
    let names = listed_users(table);
    body.iter()
        .zip(names)
        .map(|(row, name)| {
            let cells: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .zip(row)
                .map(|(key, cell)| (key.clone(), serde_json::json!(cell)))
                .collect();
            let mut cells = serde_json::Value::Object(cells);
            cells["user_name"] = serde_json::json!(name);
            (name, cells)
        })
        .collect()
}

/// A `|`-bordered table's header cells and body rows.
fn table_cells(table: &str) -> (Vec<&str>, Vec<Vec<&str>>) {
    let mut rows: Vec<Vec<&str>> = table
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .collect();
    if rows.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let header = rows.remove(0);
    (header, rows)
}

/// The user names in `clpctl user:list`'s table: the column headed
/// "User Name" (the first column when no header says so) of every row
/// after the header, rows being the lines that start with `|`.
fn listed_users(table: &str) -> Vec<String> {
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .collect();
    let Some((header, body)) = rows.split_first() else {
        return Vec::new();
    };
    let column = header
        .iter()
        .position(|cell| {
            let cell = cell.to_ascii_lowercase().replace([' ', '_', '-'], "");
            cell == "username"
        })
        .unwrap_or(0);
    body.iter()
        .filter_map(|row| row.get(column))
        .map(|cell| (*cell).to_owned())
        .collect()
}

/// The family's driver, as the registry builds it when `[cloudpanel]` is enabled.
pub fn driver(config: &Config, _link: &Link) -> std::io::Result<AnyDriver> {
    Ok(AnyDriver::plain(Cloudpanel::new(config)))
}

impl Driver for Cloudpanel {
    type Action = CloudpanelAction;

    async fn execute(
        &self,
        action: &CloudpanelAction,
        ctx: &Context,
    ) -> Result<Outcome, DriverError> {
        match action {
            CloudpanelAction::SiteAdd(site) => self.site_add(site, ctx).await,
            CloudpanelAction::SiteDelete(site) => self.site_delete(site, ctx).await,
            CloudpanelAction::CertificateInstall(install) => {
                self.certificate_install(install, ctx).await
            }
            CloudpanelAction::DbAdd(db) => self.db_add(db, ctx).await,
            CloudpanelAction::UserAdd(user) => self.user_add(user, ctx).await,
            CloudpanelAction::UserDelete(user) => self.user_delete(user, ctx).await,
            CloudpanelAction::List(_) => self.list(ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_read_from_the_user_name_column() {
        let table = "\
+-------+-----------+---------------------+
| Role  | User Name | E-Mail              |
+-------+-----------+---------------------+
| admin | john.doe  | john.doe@example.com |
| user  | jane      | jane@example.com    |
+-------+-----------+---------------------+
";
        assert_eq!(listed_users(table), ["john.doe", "jane"]);
        assert_eq!(listed_users("| a |\n| b |\n"), ["b"]);
        assert!(listed_users("No users.\n").is_empty());
    }
}
