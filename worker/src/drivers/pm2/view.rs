//! What opsqueue keeps of `pm2 jlist`: a whitelist of fields per app.
//!
//! pm2's list carries every app's whole environment (the environment of
//! whoever started it plus the app's own `env`, secrets included), at the
//! top of `pm2_env` and under `pm2_env.env`. Nothing of an entry leaves this
//! module except the fields [`App::view`] copies one by one, so no
//! environment value can reach a result, an observation or a log line; the
//! raw list is never logged (the driver runs `jlist` quietly) and parse
//! errors never quote it. The one exception is [`App::settings`], which
//! `pm2.update` writes back to pm2: it holds the environment, and its
//! `Debug` shows the variables' names only.
//!
//! pm2 may print its banner and `[PM2] Spawning PM2 daemon…` lines to
//! stdout before the list (HOST-PROGRAMS §1, on a fresh `PM2_HOME`). The
//! list itself is always one line, so [`Listed::parse`] takes the whole
//! output if it is a list, else the last line that starts with `[` and is
//! one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use serde_json::{Map, Value, json};

/// pm2's list, grouped by app name (cluster mode: one entry per instance).
#[derive(Debug)]
pub struct Listed {
    apps: BTreeMap<String, Vec<Value>>,
}

/// `jlist` printed something that is not pm2's list. The message gives its
/// size only: the text may carry environments.
#[derive(Debug, thiserror::Error)]
#[error("pm2 jlist printed {0} bytes that are not a JSON list of apps")]
pub struct NotAList(pub usize);

/// The JSON array in `jlist`'s output: all of it, or the last line that is
/// one (lines before it are pm2's banner and messages).
fn json_array(stdout: &[u8]) -> Option<Vec<Value>> {
    if let Ok(entries) = serde_json::from_slice(stdout) {
        return Some(entries);
    }
    stdout
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .rev()
        .filter(|line| line.starts_with(b"["))
        .find_map(|line| serde_json::from_slice(line).ok())
}

impl Listed {
    pub fn parse(stdout: &[u8]) -> Result<Listed, NotAList> {
        let entries = json_array(stdout).ok_or(NotAList(stdout.len()))?;
        let mut apps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for entry in entries {
            let name = entry["name"]
                .as_str()
                .or_else(|| entry["pm2_env"]["name"].as_str())
                .ok_or(NotAList(stdout.len()))?
                .to_owned();
            apps.entry(name).or_default().push(entry);
        }
        for instances in apps.values_mut() {
            instances.sort_by_key(|e| e["pm_id"].as_i64());
        }
        Ok(Listed { apps })
    }

    pub fn get(&self, name: &str) -> Option<App<'_>> {
        self.apps.get(name).map(|entries| App { entries })
    }

    pub fn apps(&self) -> impl Iterator<Item = (&str, App<'_>)> {
        self.apps
            .iter()
            .map(|(name, entries)| (name.as_str(), App { entries }))
    }
}

/// One app: its instances' entries.
#[derive(Debug, Clone, Copy)]
pub struct App<'a> {
    entries: &'a [Value],
}

/// pm2's statuses that count as running.
pub const ONLINE: &str = "online";
/// The status of an app waiting for its `ready` signal (`wait_ready`).
pub const LAUNCHING: &str = "launching";
pub const STOPPED: &str = "stopped";

fn env<'e>(entry: &'e Value, key: &str) -> &'e Value {
    &entry["pm2_env"][key]
}

/// Epoch milliseconds as RFC 3339, or null.
fn millis_to_time(value: &Value) -> Value {
    value
        .as_i64()
        .filter(|ms| *ms > 0)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map_or(Value::Null, |t| json!(opsqueue_shared::time::to_db(t)))
}

fn text(value: &Value) -> Value {
    value.as_str().map_or(Value::Null, |s| json!(s))
}

impl<'a> App<'a> {
    /// Each instance's status, in pm_id order.
    pub fn statuses(&self) -> Vec<&'a str> {
        self.entries
            .iter()
            .map(|e| env(e, "status").as_str().unwrap_or("unknown"))
            .collect()
    }

    /// The app's status: its instances' one status, or `mixed`.
    pub fn status(&self) -> &'a str {
        let statuses = self.statuses();
        match statuses.split_first() {
            Some((first, rest)) if rest.iter().all(|s| s == first) => first,
            Some(_) => "mixed",
            None => "unknown",
        }
    }

    pub fn is(&self, status: &str) -> bool {
        self.statuses().iter().all(|s| *s == status)
    }

    pub fn any(&self, status: &str) -> bool {
        self.statuses().contains(&status)
    }

    /// The stdout and stderr log files of every instance, without repeats.
    pub fn log_paths(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        for entry in self.entries {
            for (key, list) in [("pm_out_log_path", &mut out), ("pm_err_log_path", &mut err)] {
                if let Some(path) = env(entry, key).as_str().map(PathBuf::from)
                    && !list.contains(&path)
                {
                    list.push(path);
                }
            }
        }
        (out, err)
    }

    /// The whitelisted fields: what results and observations show.
    pub fn view(&self) -> Value {
        let first = &self.entries[0];
        let args = match env(first, "args") {
            Value::Array(items) => items.iter().map(text).collect(),
            Value::String(one) => vec![json!(one)],
            _ => Vec::new(),
        };
        let instances: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                json!({
                    "pm_id": e["pm_id"].as_i64(),
                    "pid": e["pid"].as_i64().filter(|pid| *pid > 0),
                    "status": text(env(e, "status")),
                    "cpu_percent": e["monit"]["cpu"].as_f64(),
                    "memory_bytes": e["monit"]["memory"].as_u64(),
                    "restarts": env(e, "restart_time").as_u64(),
                    "unstable_restarts": env(e, "unstable_restarts").as_u64(),
                    "started_at": millis_to_time(env(e, "pm_uptime")),
                    "exit_code": env(e, "exit_code").as_i64(),
                })
            })
            .collect();
        let (out, err) = self.log_paths();
        let mut view = Map::new();
        view.insert("name".into(), text(env(first, "name")));
        view.insert("namespace".into(), text(env(first, "namespace")));
        view.insert("status".into(), json!(self.status()));
        view.insert(
            "exec_mode".into(),
            json!(
                env(first, "exec_mode")
                    .as_str()
                    .map(|m| m.trim_end_matches("_mode"))
            ),
        );
        view.insert("interpreter".into(), text(env(first, "exec_interpreter")));
        view.insert("script".into(), text(env(first, "pm_exec_path")));
        view.insert("cwd".into(), text(env(first, "pm_cwd")));
        view.insert("args".into(), Value::Array(args));
        view.insert(
            "autorestart".into(),
            json!(env(first, "autorestart").as_bool()),
        );
        view.insert(
            "max_memory_restart".into(),
            json!(env(first, "max_memory_restart").as_u64()),
        );
        view.insert(
            "log_date_format".into(),
            text(env(first, "log_date_format")),
        );
        view.insert(
            "created_at".into(),
            millis_to_time(env(first, "created_at")),
        );
        view.insert("out_log".into(), json!(out.first()));
        view.insert("err_log".into(), json!(err.first()));
        view.insert("instances".into(), Value::Array(instances));
        Value::Object(view)
    }

    /// The settings `pm2.update` changes, and what it needs to give them
    /// back to pm2 (script, cwd, interpreter, namespace), as the first
    /// instance has them.
    pub fn settings(&self) -> Settings {
        let first = &self.entries[0];
        let args = match env(first, "args") {
            Value::Array(items) => items
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            Value::String(one) => vec![one.clone()],
            _ => Vec::new(),
        };
        let owned = |key: &str| env(first, key).as_str().map(str::to_owned);
        Settings {
            script: owned("pm_exec_path"),
            cwd: owned("pm_cwd"),
            interpreter: owned("exec_interpreter"),
            namespace: owned("namespace"),
            cluster: env(first, "exec_mode").as_str() == Some("cluster_mode"),
            instances: self.entries.len(),
            args,
            env: env(first, "env").as_object().cloned().unwrap_or_default(),
            autorestart: env(first, "autorestart").as_bool().unwrap_or(true),
            max_memory_restart: env(first, "max_memory_restart").as_u64(),
            log_date_format: owned("log_date_format"),
        }
    }

    /// Each instance's restart count, in pm_id order.
    pub fn restarts(&self) -> Vec<u64> {
        self.entries
            .iter()
            .map(|e| env(e, "restart_time").as_u64().unwrap_or(0))
            .collect()
    }
}

/// An app's settings as pm2 holds them (see [`App::settings`]). `env` is
/// the app's whole environment, secrets included.
#[derive(Clone, PartialEq)]
pub struct Settings {
    pub script: Option<String>,
    pub cwd: Option<String>,
    pub interpreter: Option<String>,
    pub namespace: Option<String>,
    /// Cluster mode (pm2 reloads it without downtime) rather than fork mode.
    pub cluster: bool,
    pub instances: usize,
    pub args: Vec<String>,
    pub env: Map<String, Value>,
    pub autorestart: bool,
    /// Bytes.
    pub max_memory_restart: Option<u64>,
    pub log_date_format: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("script", &self.script)
            .field("instances", &self.instances)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("autorestart", &self.autorestart)
            .field("max_memory_restart", &self.max_memory_restart)
            .field("log_date_format", &self.log_date_format)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instances of a cluster app, trimmed from a real `pm2 jlist`, with
    /// secrets where pm2 puts the environment.
    fn sample() -> Vec<u8> {
        let entry = |pm_id: i64, status: &str| {
            json!({"pid": 9065 + pm_id, "name": "web1", "pm_id": pm_id,
                "monit": {"memory": 54_104_064, "cpu": 1.5},
                "pm2_env": {"name": "web1", "namespace": "default", "pm_id": pm_id, "status": status,
                    "exec_mode": "cluster_mode", "instances": 2, "exec_interpreter": "node",
                    "pm_exec_path": "/srv/app/server.js", "pm_cwd": "/srv/app", "args": ["--alpha", "1"],
                    "pm_out_log_path": format!("/pm2/logs/web1-out-{pm_id}.log"),
                    "pm_err_log_path": format!("/pm2/logs/web1-error-{pm_id}.log"),
                    "pm_uptime": 1_795_341_948_940_i64, "created_at": 1_795_341_948_940_i64,
                    "restart_time": 2, "unstable_restarts": 0, "autorestart": true, "exit_code": null,
                    "API_TOKEN": "top-level-secret", "PATH": "/usr/bin",
                    "env": {"API_TOKEN": "nested-secret", "PORT": "18080"}}})
        };
        serde_json::to_vec(&json!([entry(1, "online"), entry(0, "stopped")])).unwrap()
    }

    #[test]
    fn the_view_copies_whitelisted_fields_and_never_the_environment() {
        let listed = Listed::parse(&sample()).unwrap();
        let app = listed.get("web1").unwrap();
        assert_eq!(app.status(), "mixed");
        assert!(app.any(ONLINE) && !app.is(ONLINE));
        let view = app.view();
        let text = view.to_string();
        for secret in [
            "top-level-secret",
            "nested-secret",
            "18080",
            "PATH",
            "API_TOKEN",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(view["exec_mode"], "cluster");
        assert_eq!(view["script"], "/srv/app/server.js");
        assert_eq!(view["args"], json!(["--alpha", "1"]));
        assert_eq!(view["instances"][0]["pm_id"], 0, "instances in pm_id order");
        assert_eq!(view["instances"][1]["pid"], 9066);
        assert_eq!(view["instances"][0]["memory_bytes"], 54_104_064);
        assert!(
            view["instances"][0]["started_at"]
                .as_str()
                .unwrap()
                .starts_with("2026-")
        );
        let (out, err) = app.log_paths();
        assert_eq!((out.len(), err.len()), (2, 2));
    }

    /// What pm2 7.0.4 prints to stdout before `jlist`'s list on a fresh
    /// `PM2_HOME` when neither `-s` nor `PM2_DISCRETE_MODE` is in effect
    /// (captured with `--no-color`; HOST-PROGRAMS §1).
    const BANNER: &str = r"
                        -------------

__/\\\\\\\\\\\\\____/\\\\____________/\\\\____/\\\\\\\\\_____
 _\/\\\/////////\\\_\/\\\\\\________/\\\\\\__/\\\///////\\\___
  _\/\\\_______\/\\\_\/\\\//\\\____/\\\//\\\_\///______\//\\\__
   _\/\\\\\\\\\\\\\/__\/\\\\///\\\/\\\/_\/\\\___________/\\\/___
    _\/\\\/////////____\/\\\__\///\\\/___\/\\\________/\\\//_____
     _\/\\\_____________\/\\\____\///_____\/\\\_____/\\\//________
      _\/\\\_____________\/\\\_____________\/\\\___/\\\/___________
       _\/\\\_____________\/\\\_____________\/\\\__/\\\\\\\\\\\\\\\_
        _\///______________\///______________\///__\///////////////__


                          Runtime Edition

        PM2 is a Production Process Manager for Node.js applications
                     with a built-in Load Balancer.

                Start and Daemonize any application:
                $ pm2 start app.js

                Load Balance 4 instances of api.js:
                $ pm2 start api.js -i 4

                Monitor in production:
                $ pm2 monitor

                Make pm2 auto-boot at server restart:
                $ pm2 startup

                To go further checkout:
                http://pm2.io/


                        -------------

[PM2] Spawning PM2 daemon with pm2_home=/tmp/tmp.GrYLEqYmFs
[PM2] PM2 Successfully daemonized
";

    #[test]
    fn the_list_is_found_after_pm2_s_banner() {
        let empty = format!("{BANNER}[]");
        assert_eq!(Listed::parse(empty.as_bytes()).unwrap().apps().count(), 0);

        let sample = String::from_utf8(sample()).unwrap();
        let listed = format!("{BANNER}{sample}\n");
        let listed = Listed::parse(listed.as_bytes()).unwrap();
        assert_eq!(
            listed.get("web1").unwrap().statuses(),
            ["stopped", "online"]
        );

        let coloured = format!("\u{1b}[32m[PM2] \u{1b}[39mSpawning PM2 daemon\n{sample}");
        assert!(Listed::parse(coloured.as_bytes()).is_ok());
    }

    #[test]
    fn output_that_is_not_a_list_is_refused_without_quoting_it() {
        let banner_only = BANNER.to_owned();
        let message_after = format!("{BANNER}[PM2][ERROR] secret");
        for bad in [
            banner_only.as_bytes(),
            message_after.as_bytes(),
            b"[PM2] Spawning PM2 daemon\n[{\"env\": \"secret\"",
            b"{\"env\": \"secret\"}",
            b"",
        ] {
            let error = Listed::parse(bad).unwrap_err();
            assert!(!error.to_string().contains("secret"));
            assert!(!error.to_string().contains("Spawning"));
        }
        assert_eq!(Listed::parse(b"[]").unwrap().apps().count(), 0);
    }
}
