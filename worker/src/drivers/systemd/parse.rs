//! Parsers for what systemctl and journalctl print, kept apart from the
//! driver so they are tested on recorded output.
//!
//! - `systemctl show` prints `Key=Value` lines in D-Bus order, not in `-p`
//!   order (systemd#4907), one block per unit separated by a blank line:
//!   parsed into maps, never read by position. A missing unit is a block
//!   with `LoadState=not-found`, exit code 0.
//! - `systemctl list-units|list-unit-files -o json` print one JSON array.
//! - `journalctl -o json` prints one object per line; a value is a string,
//!   `null` (over 4096 bytes), an array (a repeated field) or an array of
//!   bytes (not UTF-8).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

/// The properties the driver asks `systemctl show` for.
pub const SHOW_PROPERTIES: &str = "Id,Description,LoadState,ActiveState,SubState,UnitFileState,\
MainPID,ExecMainStatus,Result,NRestarts,FragmentPath,CanReload,NeedDaemonReload,ActiveEnterTimestamp,\
MemoryCurrent,CPUUsageNSec";

/// One unit as `systemctl show` described it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitState(BTreeMap<String, String>);

impl UnitState {
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }

    pub fn id(&self) -> &str {
        self.get("Id")
    }

    pub fn load_state(&self) -> &str {
        self.get("LoadState")
    }

    pub fn active_state(&self) -> &str {
        self.get("ActiveState")
    }

    pub fn unit_file_state(&self) -> &str {
        self.get("UnitFileState")
    }

    pub fn exists(&self) -> bool {
        !matches!(self.load_state(), "not-found" | "")
    }

    /// Running or on its way there (a start would be a no-op).
    pub fn is_active(&self) -> bool {
        matches!(self.active_state(), "active" | "reloading" | "activating")
    }

    /// Stopped (a stop would be a no-op); `failed` counts as stopped.
    pub fn is_inactive(&self) -> bool {
        matches!(self.active_state(), "inactive" | "failed")
    }

    pub fn is_enabled(&self) -> bool {
        matches!(
            self.unit_file_state(),
            "enabled" | "enabled-runtime" | "alias"
        )
    }

    pub fn can_reload(&self) -> bool {
        self.get("CanReload") == "yes"
    }

    pub fn needs_daemon_reload(&self) -> bool {
        self.get("NeedDaemonReload") == "yes"
    }

    fn number(&self, key: &str) -> Value {
        match self.get(key).parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => Value::Null,
        }
    }

    fn text(&self, key: &str) -> Value {
        match self.get(key) {
            "" => Value::Null,
            text => json!(text),
        }
    }

    /// The observation stored for the API's reads (and put in results).
    pub fn to_json(&self) -> Value {
        let main_pid = match self.number("MainPID") {
            Value::Number(n) if n.as_i64() == Some(0) => Value::Null,
            other => other,
        };
        json!({
            "unit": self.id(),
            "description": self.text("Description"),
            "load_state": self.text("LoadState"),
            "active_state": self.text("ActiveState"),
            "sub_state": self.text("SubState"),
            "unit_file_state": self.text("UnitFileState"),
            "main_pid": main_pid,
            "exec_main_status": self.number("ExecMainStatus"),
            "result": self.text("Result"),
            "restarts": self.number("NRestarts"),
            "fragment_path": self.text("FragmentPath"),
            "active_since": active_since(self.get("ActiveEnterTimestamp")),
            // `[not set]` (no accounting) and 2^64-1 (unknown) read as null.
            "memory_bytes": self.number("MemoryCurrent"),
            "cpu_usage_nsec": self.number("CPUUsageNSec"),
        })
    }
}

/// `ActiveEnterTimestamp` with `--timestamp=unix` is `@<seconds>`; empty
/// when the unit never became active.
fn active_since(value: &str) -> Value {
    value
        .strip_prefix('@')
        .and_then(|secs| secs.parse::<i64>().ok())
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// The blocks of `systemctl show U1 U2 …`, in the order printed (the order
/// the units were named).
pub fn show_blocks(text: &str) -> Vec<UnitState> {
    let mut blocks = Vec::new();
    let mut current = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(UnitState(std::mem::take(&mut current)));
            }
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            current.insert(key.to_owned(), value.to_owned());
        }
    }
    if !current.is_empty() {
        blocks.push(UnitState(current));
    }
    blocks
}

/// Unit names out of `systemctl list-units -o json` (`unit`) or
/// `list-unit-files -o json` (`unit_file`).
pub fn listed_units(text: &str) -> Result<Vec<String>, String> {
    let rows: Vec<Value> =
        serde_json::from_str(text.trim()).map_err(|e| format!("not a JSON array: {e}"))?;
    Ok(rows
        .iter()
        .filter_map(|row| row.get("unit").or_else(|| row.get("unit_file")))
        .filter_map(Value::as_str)
        .map(|unit| unit.rsplit('/').next().unwrap_or(unit).to_owned())
        .collect())
}

/// One journal line as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalLine {
    /// RFC 3339, from `__REALTIME_TIMESTAMP` (µs since the epoch).
    pub time: Option<String>,
    /// syslog priority, 0 (emerg) to 7 (debug).
    pub priority: Option<u8>,
    pub pid: Option<u32>,
    pub identifier: Option<String>,
    pub message: String,
}

/// A journal field's text: a string, an array of byte values (not UTF-8;
/// decoded lossily), or a repeated field (the last value); `null` (a value
/// over 4096 bytes) says so.
fn field_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Null => Some("[value too long for the journal's JSON output]".into()),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| b as u8)
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => field_text(items.last()),
        other => Some(other.to_string()),
    }
}

/// Parses `journalctl -o json` output; lines that are not JSON objects are
/// skipped (journalctl prints `-- No entries --` only without `-o json`).
pub fn journal_lines(text: &str) -> Vec<JournalLine> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(Value::is_object)
        .map(|entry| {
            let time = field_text(entry.get("__REALTIME_TIMESTAMP"))
                .and_then(|us| us.parse::<i64>().ok())
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            JournalLine {
                time,
                priority: field_text(entry.get("PRIORITY")).and_then(|p| p.parse().ok()),
                pid: field_text(entry.get("_PID")).and_then(|p| p.parse().ok()),
                identifier: field_text(entry.get("SYSLOG_IDENTIFIER"))
                    .or_else(|| field_text(entry.get("_COMM"))),
                message: field_text(entry.get("MESSAGE")).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from systemd 252 (`systemctl --user show a b -p …
    /// --timestamp=unix`), in the bus order it prints.
    const SHOW: &str = "MainPID=32035\nResult=success\nNRestarts=0\nExecMainStatus=0\nId=en.service\n\
LoadState=loaded\nActiveState=active\nSubState=running\nFragmentPath=/etc/systemd/system/en.service\n\
UnitFileState=enabled\nActiveEnterTimestamp=@1795462671\nCanReload=no\nNeedDaemonReload=no\n\
Description=enable test\n\nMainPID=0\nId=nosuch.service\nLoadState=not-found\nActiveState=inactive\n\
SubState=dead\nUnitFileState=\nActiveEnterTimestamp=\nDescription=nosuch.service\n";

    #[test]
    fn show_output_is_read_by_key_one_block_per_unit() {
        let blocks = show_blocks(SHOW);
        assert_eq!(blocks.len(), 2);
        let en = &blocks[0];
        assert_eq!(en.id(), "en.service");
        assert!(en.exists() && en.is_active() && en.is_enabled() && !en.can_reload());
        let json = en.to_json();
        assert_eq!(json["main_pid"], 32035);
        assert_eq!(json["active_state"], "active");
        assert_eq!(json["active_since"], "2026-11-23T19:37:51+00:00");
        let missing = &blocks[1];
        assert!(!missing.exists() && missing.is_inactive());
        assert_eq!(missing.to_json()["main_pid"], Value::Null);
        assert_eq!(missing.to_json()["unit_file_state"], Value::Null);
    }

    #[test]
    fn unit_lists_come_from_either_json_shape() {
        let units = r#"[{"unit":"en.service","load":"loaded","active":"active","sub":"running","description":"x"}]"#;
        assert_eq!(listed_units(units).unwrap(), ["en.service"]);
        let files =
            r#"[{"unit_file":"/etc/systemd/system/pb.service","state":"enabled","preset":null}]"#;
        assert_eq!(listed_units(files).unwrap(), ["pb.service"]);
        assert!(listed_units("● en.service loaded").is_err());
    }

    #[test]
    fn journal_json_lines_become_readable_lines_whatever_the_value_shapes() {
        let text = concat!(
            r#"{"__REALTIME_TIMESTAMP":"1795462672116614","PRIORITY":"6","_PID":"32166","SYSLOG_IDENTIFIER":"sh","MESSAGE":"hello from unit","__CURSOR":"s=1"}"#,
            "\n",
            r#"{"__REALTIME_TIMESTAMP":"1795462672116615","MESSAGE":[104,105,255],"_COMM":"bin"}"#,
            "\n",
            r#"{"MESSAGE":null}"#,
            "\n",
            r#"{"MESSAGE":["first","second"]}"#,
            "\n-- No entries --\n",
        );
        let lines = journal_lines(text);
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            JournalLine {
                time: Some("2026-11-23T19:37:52.116614Z".into()),
                priority: Some(6),
                pid: Some(32166),
                identifier: Some("sh".into()),
                message: "hello from unit".into(),
            }
        );
        assert_eq!(lines[1].message, "hi\u{fffd}");
        assert_eq!(lines[1].identifier.as_deref(), Some("bin"));
        assert!(lines[2].message.contains("too long"));
        assert_eq!(lines[3].message, "second");
    }
}
