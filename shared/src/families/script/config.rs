//! `[scripts]`: `script.run` runs executables from `dir` only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::families::family::FamilySection;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptsConfig {
    pub enabled: bool,
    /// The allow-list: a script is a regular executable file directly in it.
    pub dir: PathBuf,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/etc/opsqueue/scripts"),
        }
    }
}

impl FamilySection for ScriptsConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }
}
