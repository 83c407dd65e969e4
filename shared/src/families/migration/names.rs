//! A process's id across the fleet: `<kind>:<name>@<server>`, e.g.
//! `pm2:web@server-a`. Each part is parsed with its own rule (the kind one
//! of [`ProcessKind`], the name as that kind names it, the server a
//! target's name), so an id in a path is either a process opsqueue could
//! manage or a `422`.

use serde::{Deserialize, Serialize};

use crate::families::pm2::ProcessName;
use crate::families::pocketbase::ServiceName;
use crate::families::systemd::UnitName;
use crate::names::{Label, NameError};

/// The kinds of workload opsqueue manages, with the family and managed
/// kind each is recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    Pm2,
    Pocketbase,
    Systemd,
}

impl ProcessKind {
    pub const ALL: [ProcessKind; 3] = [
        ProcessKind::Pm2,
        ProcessKind::Pocketbase,
        ProcessKind::Systemd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::Pm2 => "pm2",
            ProcessKind::Pocketbase => "pocketbase",
            ProcessKind::Systemd => "systemd",
        }
    }

    /// `(family, kind)` of its managed objects and observations.
    pub fn managed(self) -> (&'static str, &'static str) {
        match self {
            ProcessKind::Pm2 => ("pm2", "process"),
            ProcessKind::Pocketbase => ("pocketbase", "service"),
            ProcessKind::Systemd => ("systemd", "unit"),
        }
    }

    pub fn parse(value: &str) -> Result<Self, NameError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| {
                NameError::new("process kind", value, "must be pm2, pocketbase or systemd")
            })
    }

    /// Checks `name` the way this kind names its objects; the normal form.
    fn name(self, name: &str) -> Result<String, NameError> {
        Ok(match self {
            ProcessKind::Pm2 => ProcessName::parse(name)?.to_string(),
            ProcessKind::Pocketbase => ServiceName::parse(name)?.to_string(),
            ProcessKind::Systemd => UnitName::parse(name)?.to_string(),
        })
    }
}

/// `<kind>:<name>@<server>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessId {
    kind: ProcessKind,
    name: String,
    server: Label,
}

impl ProcessId {
    pub const WHAT: &'static str = "process id";

    pub fn new(kind: ProcessKind, name: &str, server: &str) -> Result<Self, NameError> {
        Ok(Self {
            kind,
            name: kind.name(name)?,
            server: Label::parse(server)?,
        })
    }

    pub fn parse(value: &str) -> Result<Self, NameError> {
        let refuse = |reason: &str| NameError::new(Self::WHAT, value, reason);
        if value.len() > 400 {
            return Err(refuse("must be at most 400 bytes"));
        }
        let (kind, rest) = value
            .split_once(':')
            .ok_or_else(|| refuse("must read <kind>:<name>@<server>"))?;
        let (name, server) = rest
            .rsplit_once('@')
            .ok_or_else(|| refuse("must read <kind>:<name>@<server>"))?;
        Self::new(ProcessKind::parse(kind)?, name, server)
    }

    pub fn kind(&self) -> ProcessKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn server(&self) -> &str {
        self.server.as_str()
    }

    pub fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::names::string_schema(
            "A process: `<kind>:<name>@<server>` (`pm2:web@server-a`), kind pm2, pocketbase or systemd",
            "^(pm2|pocketbase|systemd):[^:@]+@[A-Za-z0-9][A-Za-z0-9._-]*$".to_owned(),
            400,
        )
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}@{}",
            self.kind.as_str(),
            self.name,
            self.server.as_str()
        )
    }
}

impl TryFrom<String> for ProcessId {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProcessId> for String {
    fn from(id: ProcessId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_id_names_a_kind_a_name_and_a_server_or_is_refused() {
        let id = ProcessId::parse("pm2:web.api@server-a").unwrap();
        assert_eq!(
            (id.kind(), id.name(), id.server()),
            (ProcessKind::Pm2, "web.api", "server-a")
        );
        assert_eq!(id.to_string(), "pm2:web.api@server-a");
        let unit = ProcessId::parse("systemd:web@b").unwrap();
        assert_eq!(unit.name(), "web.service");
        for hostile in [
            "",
            "pm2:web",
            "web@a",
            "docker:web@a",
            "pm2:../etc@a",
            "pm2:all@a",
            "pm2:web@a/b",
            "pm2:web@",
            "pm2:we b@a",
            "pm2:web@a@b",
            "pm2:$(reboot)@a",
        ] {
            assert!(ProcessId::parse(hostile).is_err(), "{hostile:?} accepted");
        }
    }
}
