//! The schedules the monitor keeps for the families that observe the host:
//! `refresh-<family>` refreshes what the API's reads answer from, on the
//! cron the configuration gives, for each enabled family. Which families
//! have one, and of which operation type, is each family's declaration
//! (`refresh`) and config section (`refresh_cron`).
//!
//! Ownership: a default schedule nobody edited has `updated_at =
//! created_at`. Such a schedule follows the configuration (made when
//! missing, remade when the configuration's cron or template changed,
//! removed when its family is disabled). Once a user changed it through
//! the API (`PUT /api/v1/schedules/{name}`), the monitor never touches it
//! again; deleting it brings the default back at the next start.
//!
//! [`ensure_defaults`] runs once at the monitor's start, in one `BEGIN
//! IMMEDIATE` transaction, so two monitors starting at once agree.

use opsqueue_shared::Action;
use opsqueue_shared::operation::DEFAULT_PRIORITY;
use opsqueue_shared::store::{Schedule, schedule_delete, schedule_get, schedule_insert};
use opsqueue_shared::time::Timestamp;
use opsqueue_shared::{Config, Store, StoreError};
use serde_json::json;

/// One family's default refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultSchedule {
    pub family: &'static str,
    pub enabled: bool,
    pub cron: String,
    /// The operation type; its payload is `{}`.
    pub kind: &'static str,
}

impl DefaultSchedule {
    pub fn name(&self) -> String {
        format!("refresh-{}", self.family)
    }

    fn schedule(&self, now: Timestamp) -> Schedule {
        let action =
            Action::parse(self.kind, json!({})).expect("a default schedule's template parses");
        Schedule {
            name: self.name(),
            cron: self.cron.clone(),
            kind: action.kind().to_owned(),
            payload: action.payload(),
            target: "local".into(),
            priority: DEFAULT_PRIORITY,
            timeout_secs: None,
            // The next fire is the retry.
            max_attempts: Some(1),
            enabled: true,
            last_fire_at: Some(now),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Every family's default refresh, enabled or not (from the one list of
/// families: a family that observes the host names its refresh there).
pub fn defaults(config: &Config) -> Vec<DefaultSchedule> {
    config
        .families()
        .into_iter()
        .filter_map(|(family, section)| {
            Some(DefaultSchedule {
                family: family.name,
                enabled: section.enabled(),
                cron: section.refresh_cron()?.to_owned(),
                kind: family.refresh?,
            })
        })
        .collect()
}

/// What [`ensure_defaults`] did, by schedule name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DefaultsReport {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    /// Edited by a user: left alone.
    pub kept: Vec<String>,
}

fn untouched(schedule: &Schedule) -> bool {
    schedule.updated_at == schedule.created_at
}

fn same_template(a: &Schedule, b: &Schedule) -> bool {
    (&a.cron, &a.kind, &a.payload, a.max_attempts) == (&b.cron, &b.kind, &b.payload, b.max_attempts)
}

/// Brings the default schedules in line with `config` (see the header).
pub fn ensure_defaults(
    store: &Store,
    config: &Config,
    now: Timestamp,
) -> Result<DefaultsReport, StoreError> {
    let wanted = defaults(config);
    store.write(|tx| {
        let mut report = DefaultsReport::default();
        for default in &wanted {
            let name = default.name();
            let existing = schedule_get(tx, &name)?;
            match (default.enabled, existing) {
                (_, Some(found)) if !untouched(&found) => report.kept.push(name),
                (true, None) => {
                    schedule_insert(tx, &default.schedule(now))?;
                    report.created.push(name);
                }
                (true, Some(found)) => {
                    let fresh = default.schedule(now);
                    if !same_template(&found, &fresh) {
                        schedule_delete(tx, &name)?;
                        schedule_insert(tx, &fresh)?;
                        report.replaced.push(name);
                    }
                }
                (false, Some(_)) => {
                    schedule_delete(tx, &name)?;
                    report.removed.push(name);
                }
                (false, None) => {}
            }
        }
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsqueue_shared::store::schedule_update;
    use opsqueue_shared::time;

    fn store() -> (Store, tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.path = dir.path().join("test.db");
        (Store::open(&config.database).unwrap(), dir, config)
    }

    fn get(store: &Store, name: &str) -> Option<Schedule> {
        store.read(|c| schedule_get(c, name)).unwrap()
    }

    #[test]
    fn an_enabled_family_gets_its_refresh_schedule_and_a_disabled_one_loses_it() {
        let (store, _dir, mut config) = store();
        let now = time::now();
        assert_eq!(
            ensure_defaults(&store, &config, now).unwrap(),
            DefaultsReport::default()
        );
        assert!(get(&store, "refresh-proxmox").is_none());

        config.proxmox.enabled = true;
        let report = ensure_defaults(&store, &config, now).unwrap();
        assert_eq!(report.created, ["refresh-proxmox"]);
        let made = get(&store, "refresh-proxmox").unwrap();
        assert_eq!(
            (made.kind.as_str(), made.cron.as_str()),
            ("proxmox.refresh", "0 */5 * * * *")
        );
        assert_eq!(
            ensure_defaults(&store, &config, now).unwrap(),
            DefaultsReport::default()
        );

        config.proxmox.refresh_cron = "0 * * * * *".into();
        let report = ensure_defaults(&store, &config, now).unwrap();
        assert_eq!(report.replaced, ["refresh-proxmox"]);
        assert_eq!(get(&store, "refresh-proxmox").unwrap().cron, "0 * * * * *");

        config.proxmox.enabled = false;
        let report = ensure_defaults(&store, &config, now).unwrap();
        assert_eq!(report.removed, ["refresh-proxmox"]);
        assert!(get(&store, "refresh-proxmox").is_none());
    }

    #[test]
    fn a_schedule_a_user_changed_is_never_overwritten() {
        let (store, _dir, mut config) = store();
        config.proxmox.enabled = true;
        let now = time::now();
        ensure_defaults(&store, &config, now).unwrap();
        let mut edited = get(&store, "refresh-proxmox").unwrap();
        edited.cron = "0 0 * * * *".into();
        edited.updated_at = time::add_secs(now, 5.0);
        store.write(|tx| schedule_update(tx, &edited)).unwrap();

        config.proxmox.refresh_cron = "*/10 * * * * *".into();
        let report = ensure_defaults(&store, &config, now).unwrap();
        assert_eq!(report.kept, ["refresh-proxmox"]);
        config.proxmox.enabled = false;
        let report = ensure_defaults(&store, &config, now).unwrap();
        assert_eq!(report.kept, ["refresh-proxmox"]);
        assert_eq!(get(&store, "refresh-proxmox").unwrap().cron, "0 0 * * * *");
    }

    #[test]
    fn an_enabled_pm2_systemd_or_caddy_gets_its_refresh_every_minute_and_loses_it_when_disabled() {
        type Switch = fn(&mut Config) -> &mut bool;
        let families: [(Switch, &str, &str); 3] = [
            (|c| &mut c.pm2.enabled, "refresh-pm2", "pm2.list"),
            (
                |c| &mut c.systemd.enabled,
                "refresh-systemd",
                "systemd.refresh",
            ),
            // A reload re-applies Caddy's managed sites.
            (|c| &mut c.caddy.enabled, "refresh-caddy", "caddy.reload"),
        ];
        for (enabled, name, kind) in families {
            let (store, _dir, mut config) = store();
            *enabled(&mut config) = true;
            let report = ensure_defaults(&store, &config, time::now()).unwrap();
            assert_eq!(report.created, [name]);
            let made = get(&store, name).unwrap();
            assert_eq!(
                (made.kind.as_str(), made.cron.as_str()),
                (kind, "0 * * * * *")
            );
            assert_eq!(made.max_attempts, Some(1), "the next fire is the retry");

            *enabled(&mut config) = false;
            let report = ensure_defaults(&store, &config, time::now()).unwrap();
            assert_eq!(report.removed, [name]);
        }
    }
}
