//! One page per family, from what its workers last observed (the API never
//! looks at the host): pm2 apps, systemd units, Caddy sites, PocketBase
//! services, and Proxmox nodes with their guests. Each row's buttons fire
//! the family's actions through the fire form (the same parse and enqueue
//! as the API); a refresh is an operation too. A family whose section is
//! off says so.
//!
//! The pm2, systemd, Caddy and PocketBase pages are one table each,
//! described as data ([`Table`]): adding a family's page is one more
//! table, or a function like [`proxmox`] when its objects nest. What the
//! fire form cannot do (a workflow, such as PocketBase's create and
//! delete) is a table's `more_actions` and `create`, served by the
//! family's own module (`pocketbase`).

use std::collections::BTreeSet;

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use opsqueue_shared::names::Label;
use opsqueue_shared::store::proxmox::{
    proxmox_guest_observations, proxmox_node_list, proxmox_node_observation,
};
use opsqueue_shared::store::worker_list_running;
use serde::Deserialize;
use serde_json::{Value, json};

use super::layout::{self, Page, Section, fire_button, text, time};
use super::pocketbase;
use super::{given, ok, query_string};
use crate::auth::Caller;
use crate::managed;
use crate::observed::{self, ObservedList};
use crate::problem::ApiError;
use crate::state::AppState;

/// A column: its heading, and its cell from an observed item.
type Column = (&'static str, fn(&Value) -> String);

/// How one observed kind is shown.
struct Table {
    family: &'static str,
    title: &'static str,
    kind: &'static str,
    /// Joined with what opsqueue manages of the kind.
    managed: bool,
    /// The payload field that names an object (`{"name": …}`).
    name_field: &'static str,
    columns: &'static [Column],
    /// (label, operation type, confirmation question or "").
    actions: &'static [(&'static str, &'static str, &'static str)],
    /// The operation type that observes them all again.
    refresh: &'static str,
    /// Row buttons besides the fired actions: requests the fire form does
    /// not make (a workflow route's), given the caller, the object's name
    /// and the target.
    more_actions: Option<fn(&Caller, &str, &str) -> Markup>,
    /// The link (label, path) to the form that makes a new one, if there
    /// is one; the page's target goes with it.
    create: Option<(&'static str, &'static str)>,
}

fn at(pointer: &'static str) -> impl Fn(&Value) -> String {
    move |item| text(item.pointer(pointer))
}

fn pm2_instances(item: &Value) -> String {
    item["instances"]
        .as_array()
        .map_or("—".into(), |i| i.len().to_string())
}

fn pm2_memory(item: &Value) -> String {
    let bytes: f64 = item["instances"]
        .as_array()
        .map(|all| all.iter().filter_map(|i| i["memory_bytes"].as_f64()).sum())
        .unwrap_or(0.0);
    format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
}

fn pm2_restarts(item: &Value) -> String {
    let restarts: i64 = item["instances"]
        .as_array()
        .map(|all| all.iter().filter_map(|i| i["restarts"].as_i64()).sum())
        .unwrap_or(0);
    restarts.to_string()
}

fn upstreams(item: &Value) -> String {
    match item["upstreams"].as_array() {
        Some(list) => list
            .iter()
            .map(|u| text(Some(u)))
            .collect::<Vec<_>>()
            .join(", "),
        None => text(item.pointer("/managed/spec/upstream")),
    }
}

fn managed_by_opsqueue(item: &Value) -> String {
    if item["managed"].is_null() {
        "no"
    } else {
        "yes"
    }
    .into()
}

/// A PocketBase service's last health check.
fn pocketbase_health(item: &Value) -> String {
    match item.pointer("/health/ok").and_then(Value::as_bool) {
        Some(true) => "healthy",
        Some(false) => "failing",
        None => "—",
    }
    .into()
}

const TABLES: &[Table] = &[
    Table {
        family: "pm2",
        title: "pm2 apps",
        kind: "process",
        managed: false,
        name_field: "name",
        columns: &[
            ("App", |v| at("/name")(v)),
            ("Status", |v| at("/status")(v)),
            ("Mode", |v| at("/exec_mode")(v)),
            ("Instances", pm2_instances),
            ("Memory", pm2_memory),
            ("Restarts", pm2_restarts),
        ],
        actions: &[
            ("Restart", "pm2.restart", "Restart pm2 app {}?"),
            ("Reload", "pm2.reload", ""),
            ("Stop", "pm2.stop", "Stop pm2 app {}?"),
            ("Start", "pm2.start", ""),
        ],
        refresh: "pm2.list",
        more_actions: None,
        create: None,
    },
    Table {
        family: "systemd",
        title: "systemd units",
        kind: "unit",
        managed: true,
        name_field: "unit",
        columns: &[
            ("Unit", |v| at("/name")(v)),
            ("Active", |v| at("/active_state")(v)),
            ("Sub", |v| at("/sub_state")(v)),
            ("Enabled", |v| at("/unit_file_state")(v)),
            ("Installed by opsqueue", managed_by_opsqueue),
        ],
        actions: &[
            ("Start", "systemd.start", ""),
            ("Restart", "systemd.restart", "Restart {}?"),
            ("Stop", "systemd.stop", "Stop {}?"),
        ],
        refresh: "systemd.refresh",
        more_actions: None,
        create: None,
    },
    Table {
        family: "caddy",
        title: "Caddy sites",
        kind: "site",
        managed: true,
        name_field: "domain",
        columns: &[
            ("Domain", |v| at("/name")(v)),
            ("Upstreams", upstreams),
            ("Server", |v| at("/server")(v)),
            ("Added by opsqueue", managed_by_opsqueue),
        ],
        actions: &[(
            "Remove",
            "caddy.site.remove",
            "Remove the site {} from Caddy?",
        )],
        refresh: "caddy.list",
        more_actions: None,
        create: None,
    },
    Table {
        family: "pocketbase",
        title: "PocketBase services",
        kind: "service",
        managed: true,
        name_field: "name",
        columns: &[
            ("Service", |v| at("/name")(v)),
            ("Port", |v| at("/managed/spec/port")(v)),
            ("Domain", |v| at("/managed/spec/domain")(v)),
            ("Version", |v| at("/managed/spec/version")(v)),
            ("Status", |v| at("/status")(v)),
            ("Health", pocketbase_health),
        ],
        actions: &[
            ("Start", "pocketbase.start", ""),
            (
                "Restart",
                "pocketbase.restart",
                "Restart PocketBase service {}?",
            ),
            ("Stop", "pocketbase.stop", "Stop PocketBase service {}?"),
        ],
        refresh: "pocketbase.refresh",
        more_actions: Some(pocketbase::delete_button),
        create: Some(("Create a service", pocketbase::CREATE_PATH)),
    },
];

#[derive(Debug, Deserialize)]
pub struct TargetQuery {
    target: Option<String>,
}

pub async fn page(
    state: web::Data<AppState>,
    caller: Caller,
    family: web::Path<String>,
    query: web::Query<TargetQuery>,
) -> Result<HttpResponse, ApiError> {
    let (name, label) = layout::FAMILY_PAGES
        .iter()
        .find(|(name, _)| *name == family.as_str())
        .copied()
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard page for {family:?}")))?;
    let target = match given(&query.target) {
        Some(text) => {
            Label::parse(text).map_err(|e| ApiError::invalid_field("target", e.to_string()))?
        }
        None => Label::local(),
    };
    let title = format!("{label} on {target}");
    let body = if !layout::family_enabled(&state, name) {
        html! {
            (layout::notice(&format!(
                "The {name} family is off: set [{name}] enabled = true (OPSQUEUE_{}__ENABLED=true) for the API, the workers and the monitor.",
                name.to_ascii_uppercase()), false))
        }
    } else if name == "proxmox" {
        proxmox(&state, &caller, &target).await?
    } else {
        let table = TABLES
            .iter()
            .find(|t| t.family == name)
            .expect("a table per page");
        observed_table(&state, &caller, table, &target).await?
    };
    let targets = known_targets(&state, &target).await?;
    let page = Page {
        title: &title,
        section: Section::Family(name),
        caller: &caller,
        events: None,
    };
    let content = html! {
        form.filters method="get" {
            label { "Target"
                select name="target" {
                    @for known in &targets {
                        option value=(known) selected[*known == target.as_str()] { (known) }
                    }
                }
            }
            button.secondary type="submit" { "Show" }
        }
        (body)
    };
    Ok(ok(layout::shell(&state, &page, content)))
}

/// The targets workers serve, and the one asked for.
async fn known_targets(state: &AppState, asked: &Label) -> Result<BTreeSet<String>, ApiError> {
    let workers = state.store.call(|s| s.read(worker_list_running)).await?;
    let mut targets: BTreeSet<String> = workers.into_iter().flat_map(|w| w.targets).collect();
    targets.insert(asked.to_string());
    targets.insert(Label::local().to_string());
    Ok(targets)
}

async fn observed_table(
    state: &AppState,
    caller: &Caller,
    table: &Table,
    target: &Label,
) -> Result<Markup, ApiError> {
    let ObservedList { items } = if table.managed {
        managed::list(state, target, table.family, table.kind).await?
    } else {
        observed::list(state, target, table.family, table.kind).await?
    };
    let can_write = layout::can_write(caller);
    let newest = items
        .iter()
        .filter_map(|i| i["observed_at"].as_str())
        .max()
        .map(str::to_owned);
    Ok(html! {
        div.actions {
            span.hint {
                @match &newest {
                    Some(at) => { "As last observed (" (at) "). " }
                    None => { "Nothing observed yet. " }
                }
            }
            @if can_write {
                (fire_button(caller, table.refresh, &json!({}), target.as_str(), "Observe again", None))
                @if let Some((label, path)) = table.create {
                    a.button.small href={(path) "?" (query_string([("target", target.as_str())]))} { (label) }
                }
            }
        }
        h2 { (table.title) }
        div.table-wrap {
            table {
                thead { tr {
                    @for (heading, _) in table.columns { th { (heading) } }
                    @if can_write { th { "Actions" } }
                } }
                tbody {
                    @for item in &items {
                        @let name = text(item.get("name"));
                        tr data-name=(name) {
                            @for (_, cell) in table.columns { td { (cell(item)) } }
                            @if can_write {
                                td { div.actions {
                                    @for (label, kind, confirm) in table.actions {
                                        @let question = (!confirm.is_empty()).then(|| confirm.replace("{}", &name));
                                        (fire_button(caller, kind, &json!({ (table.name_field): name }), target.as_str(), label, question.as_deref()))
                                    }
                                    @if let Some(more) = table.more_actions {
                                        (more(caller, &name, target.as_str()))
                                    }
                                } }
                            }
                        }
                    }
                    @if items.is_empty() {
                        tr { td.empty colspan=(table.columns.len() + 1) { "None observed on this target." } }
                    }
                }
            }
        }
    })
}

/// Proxmox: each registered node with its status, and its guests with
/// their power buttons.
async fn proxmox(state: &AppState, caller: &Caller, target: &Label) -> Result<Markup, ApiError> {
    let nodes = state
        .store
        .call(|s| {
            s.read(|c| {
                let mut nodes = Vec::new();
                for node in proxmox_node_list(c)? {
                    let seen = proxmox_node_observation(c, node.id)?;
                    let guests = proxmox_guest_observations(c, node.id)?;
                    nodes.push((node, seen, guests));
                }
                Ok(nodes)
            })
        })
        .await?;
    let can_write = layout::can_write(caller);
    const POWER: &[(&str, &str, Option<&str>)] = &[
        ("Start", "proxmox.guest.start", None),
        (
            "Shut down",
            "proxmox.guest.shutdown",
            Some("Shut down guest {} on {}?"),
        ),
        (
            "Reboot",
            "proxmox.guest.reboot",
            Some("Reboot guest {} on {}?"),
        ),
        (
            "Stop",
            "proxmox.guest.stop",
            Some("Stop guest {} on {} at once (no clean shutdown)?"),
        ),
    ];
    Ok(html! {
        @if nodes.is_empty() {
            (layout::notice("No Proxmox node is registered: POST /api/v1/proxmox/nodes (see the README).", false))
        }
        @for (node, seen, guests) in &nodes {
            section.panel {
                div.actions {
                    h2 { (node.name) }
                    span.hint { (node.host) ":" (node.port) }
                    span.badge.(match seen.as_ref().and_then(|o| o.data["status"].as_str()) {
                        Some("online") => "completed", Some("offline") => "failed", _ => "pending" }) {
                        (seen.as_ref().and_then(|o| o.data["status"].as_str()).unwrap_or("unknown"))
                    }
                    @if can_write {
                        (fire_button(caller, "proxmox.refresh", &json!({"node": node.id}), target.as_str(), "Observe again", None))
                    }
                }
                div.table-wrap {
                    table {
                        thead { tr {
                            th { "VMID" } th { "Name" } th { "Kind" } th { "Status" } th.wide { "PVE node" }
                            th.wide { "CPU" } th.wide { "Memory" } th.wide { "Observed" }
                            @if can_write { th { "Power" } }
                        } }
                        tbody {
                            @for guest in guests {
                                @let data = &guest.data;
                                tr {
                                    td { (guest.name) }
                                    td { (text(data.get("name"))) }
                                    td { (text(data.get("type"))) }
                                    td { (text(data.get("status"))) }
                                    td.wide { (text(data.get("node"))) }
                                    td.wide { (text(data.get("cpu_usage"))) }
                                    td.wide { (text(data.get("memory_used"))) }
                                    td.wide { (time(guest.observed_at)) }
                                    @if can_write {
                                        td { div.actions {
                                            @for (label, kind, confirm) in POWER {
                                                @let vmid: u64 = guest.name.parse().unwrap_or_default();
                                                @let question = confirm.map(|q| q.replacen("{}", &guest.name, 1).replacen("{}", &node.name, 1));
                                                (fire_button(caller, kind, &json!({"node": node.id, "vmid": vmid}), target.as_str(), label, question.as_deref()))
                                            }
                                        } }
                                    }
                                }
                            }
                            @if guests.is_empty() { tr { td.empty colspan="9" { "No guest observed yet." } } }
                        }
                    }
                }
            }
        }
    })
}
