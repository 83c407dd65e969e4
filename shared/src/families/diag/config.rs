//! `[diag]`: the diag family is always on; its one setting is for tests.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::families::family::FamilySection;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagConfig {
    /// When set, every diag execution appends `<id> <attempt> <worker>` to
    /// this file (tests use it to prove exactly-once execution).
    pub record_path: Option<PathBuf>,
}

impl FamilySection for DiagConfig {
    fn enabled(&self) -> bool {
        true
    }
}
