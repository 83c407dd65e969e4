//! The page shell (head, navigation, who is signed in, the live indicator)
//! and the pieces every page uses: status badges, times, JSON, and the
//! small forms behind buttons (each carries the session's CSRF token, and a
//! `data-confirm` question when it changes something that matters).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use opsqueue_shared::Status;
use opsqueue_shared::store::{Scope, event_latest_id};
use serde_json::Value;

use crate::auth::{CSRF_FIELD, Caller, LOGOUT_PATH};
use crate::problem::ApiError;
use crate::state::AppState;

/// Where a page sits in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Operations,
    Fire,
    Schedules,
    Workers,
    Migrations,
    Family(&'static str),
}

/// The families that have a page, in the navigation's order.
pub const FAMILY_PAGES: &[(&str, &str)] = &[
    ("pm2", "pm2"),
    ("systemd", "systemd"),
    ("caddy", "Caddy"),
    ("pocketbase", "PocketBase"),
    ("proxmox", "Proxmox"),
];

/// What the shell needs to know about a page.
pub struct Page<'a> {
    pub title: &'a str,
    pub section: Section,
    pub caller: &'a Caller,
    /// The event stream the page follows (see [`events_url`]).
    pub events: Option<String>,
}

impl Page<'_> {
    pub fn can_write(&self) -> bool {
        can_write(self.caller)
    }
}

pub fn can_write(caller: &Caller) -> bool {
    caller.key().allows(Scope::Write)
}

/// `/api/v1/events` from the last event written now, with `filters`
/// (`type=…`): read *before* a page reads its data, so the page follows
/// every change after what it shows.
pub async fn events_url(state: &AppState, filters: &str) -> Result<String, ApiError> {
    let latest = state.store.call(|s| s.read(event_latest_id)).await?;
    let mut url = format!("/api/v1/events?last_event_id={latest}");
    if !filters.is_empty() {
        url.push('&');
        url.push_str(filters);
    }
    Ok(url)
}

fn nav_link(page: &Page, section: Section, href: &str, label: &str) -> Markup {
    html! {
        a href=(href) aria-current=[(page.section == section).then_some("page")] { (label) }
    }
}

/// The whole document around `content`.
pub fn shell(state: &AppState, page: &Page, content: Markup) -> Markup {
    let csrf = page.caller.session().map(|s| s.csrf_token.as_str());
    let families: Vec<&(&str, &str)> = FAMILY_PAGES
        .iter()
        .filter(|(family, _)| family_enabled(state, family))
        .collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(token) = csrf {
                    meta name="csrf-token" content=(token);
                }
                title { (page.title) " · opsqueue" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(asset("app.css"));
                script src=(asset("app.js")) defer {}
            }
            body data-events=[page.events.as_deref()] {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "opsqueue" }
                    nav.main aria-label="Main" {
                        (nav_link(page, Section::Overview, "/ui", "Overview"))
                        (nav_link(page, Section::Operations, "/ui/operations", "Operations"))
                        @if page.can_write() {
                            (nav_link(page, Section::Fire, "/ui/fire", "Fire"))
                        }
                        (nav_link(page, Section::Schedules, "/ui/schedules", "Schedules"))
                        (nav_link(page, Section::Workers, "/ui/workers", "Workers"))
                        (nav_link(page, Section::Migrations, "/ui/migrations", "Migrations"))
                        @for (family, label) in families {
                            (nav_link(page, Section::Family(family), &format!("/ui/families/{family}"), label))
                        }
                    }
                    div.who {
                        @if page.events.is_some() {
                            span #live data-state="connecting" title="connecting to the event stream" {}
                        }
                        span title="the API key this session acts with" {
                            (page.caller.key().name)
                            @if !page.can_write() { " (read only)" }
                        }
                        @if page.caller.session().is_some() {
                            form.inline method="post" action=(LOGOUT_PATH) {
                                (csrf_field(page.caller))
                                button.secondary.small type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #content {
                    h1 { (page.title) }
                    (content)
                }
            }
        }
    }
}

fn asset(name: &str) -> String {
    format!("/ui/assets/{name}?v={}", opsqueue_shared::VERSION)
}

pub fn family_enabled(state: &AppState, name: &str) -> bool {
    state
        .config
        .families()
        .iter()
        .any(|(family, section)| family.name == name && section.enabled())
}

/// The hidden field that carries the session's CSRF token.
pub fn csrf_field(caller: &Caller) -> Markup {
    html! {
        @if let Some(session) = caller.session() {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token);
        }
    }
}

/// A button that posts `fields` to `action`, asking `confirm` first (if
/// given).
pub fn button_form(
    caller: &Caller,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    confirm: Option<&str>,
    danger: bool,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf_field(caller))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button.small.danger[danger].secondary[!danger] type="submit" { (label) }
        }
    }
}

/// A button that fires `kind` with `payload` on `target`, as the fire form
/// would (the same parse and enqueue as `POST /api/v1/operations`).
pub fn fire_button(
    caller: &Caller,
    kind: &str,
    payload: &Value,
    target: &str,
    label: &str,
    confirm: Option<&str>,
) -> Markup {
    let payload = payload.to_string();
    button_form(
        caller,
        "/ui/fire",
        &[("type", kind), ("payload", &payload), ("target", target)],
        label,
        confirm,
        confirm.is_some(),
    )
}

pub fn badge(status: Status) -> Markup {
    html! { span class={"badge " (status.as_str())} { (status.as_str()) } }
}

/// A time, shown in the reader's zone by the script (UTC without it).
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
            (at.format("%Y-%m-%d %H:%M:%S UTC"))
        }
    }
}

pub fn maybe_time(at: Option<DateTime<Utc>>) -> Markup {
    html! {
        @match at {
            Some(at) => (time(at)),
            None => span.hint { "—" },
        }
    }
}

/// `1.2 s`, `3 min 4 s`, `2 h 5 min`.
pub fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        format!("{} min {} s", (secs / 60.0) as u64, secs as u64 % 60)
    } else {
        format!(
            "{} h {} min",
            (secs / 3600.0) as u64,
            (secs as u64 % 3600) / 60
        )
    }
}

pub fn json_block(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// A JSON value as one cell's text.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn notice(message: &str, error: bool) -> Markup {
    html! { div.notice.error[error] role=(if error { "alert" } else { "status" }) { (message) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_sensible_unit() {
        assert_eq!(duration(1.23), "1.2 s");
        assert_eq!(duration(184.0), "3 min 4 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
        assert_eq!(duration(-1.0), "0.0 s");
    }
}
