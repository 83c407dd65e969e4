//! `[caddy]`: the Caddy driver, over Caddy's admin API.

use serde::{Deserialize, Serialize};

use crate::families::family::{FamilySection, check_timeout};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaddyConfig {
    /// Registers the caddy driver in the worker (and the monitor's
    /// reconcile schedule).
    pub enabled: bool,
    /// Caddy's admin endpoint (keep it on loopback).
    pub admin_url: String,
    /// The server (under `apps.http.servers`) that gets the sites; absent:
    /// the one listening on `:443`, else on `:80`, else the only one.
    pub server: Option<String>,
    /// When the monitor re-applies the managed sites and observes them
    /// (`caddy.reload`, six fields).
    pub refresh_cron: String,
    /// Longest one admin API request may take.
    pub request_timeout_secs: u64,
}

impl Default for CaddyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            admin_url: "http://127.0.0.1:2019".into(),
            server: None,
            refresh_cron: "0 * * * * *".into(),
            request_timeout_secs: 30,
        }
    }
}

impl FamilySection for CaddyConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn refresh_cron(&self) -> Option<&str> {
        Some(&self.refresh_cron)
    }

    fn check(&self) -> Result<(), String> {
        if !(self.admin_url.starts_with("http://") || self.admin_url.starts_with("https://")) {
            return Err("admin_url must be an http:// or https:// URL".into());
        }
        if self.server.as_deref() == Some("") {
            return Err("server must not be empty (leave it out to find the server)".into());
        }
        check_timeout("request_timeout_secs", self.request_timeout_secs)
    }
}
