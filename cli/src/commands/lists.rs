//! `opsqueue targets ls` and `opsqueue schedules ls`.
//!
//! Targets: the registry of `GET /api/v1/targets`, one row per target with
//! its status, the workers serving it (and their drivers), the newest
//! heartbeat, its pending and running counts and its role. `--output json`
//! prints the API's JSON.

use comfy_table::Cell;
use serde_json::Value;

use crate::args::{SchedulesCommand, TargetsCommand};
use crate::client::Request;
use crate::commands::{Ctx, ago, print_list};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::{age, text};

/// The texts of a JSON array's items, joined with commas.
fn joined(values: impl Iterator<Item = String>) -> String {
    let mut values: Vec<String> = values.filter(|v| !v.is_empty()).collect();
    values.sort();
    values.dedup();
    values.join(",")
}

pub async fn targets(ctx: &Ctx, command: TargetsCommand) -> Result<Exit, CliError> {
    let TargetsCommand::Ls = command;
    let targets = ctx.client.json(&Request::get(&["targets"])).await?;
    if ctx.ui.json() {
        ctx.ui.print_json(&targets);
        return Ok(Exit::Completed);
    }
    let items = targets["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        eprintln!("no target is known yet: no worker served one and no operation names one");
        return Ok(Exit::Completed);
    }
    let mut table = ctx.ui.table(&[
        "TARGET",
        "STATUS",
        "WORKERS",
        "DRIVERS",
        "HEARTBEAT",
        "PENDING",
        "RUNNING",
        "ROLE",
    ]);
    for target in &items {
        let agents = target["agents"].as_array().cloned().unwrap_or_default();
        let workers = joined(agents.iter().map(|a| text(&a["worker_id"])));
        let drivers = joined(
            agents
                .iter()
                .flat_map(|a| a["drivers"].as_array().cloned().unwrap_or_default())
                .map(|d| text(&d)),
        );
        let newest = agents
            .iter()
            .map(|a| &a["heartbeat_at"])
            .filter_map(|t| t.as_str())
            .max()
            .map(|t| format!("{} ago", age(&Value::String(t.to_owned()))))
            .unwrap_or_default();
        table.add_row(vec![
            Cell::new(text(&target["name"])),
            Cell::new(text(&target["status"])),
            Cell::new(workers),
            Cell::new(drivers),
            Cell::new(newest),
            Cell::new(text(&target["pending"])),
            Cell::new(text(&target["running"])),
            Cell::new(text(&target["role"])),
        ]);
    }
    ctx.ui.print_table(table);
    Ok(Exit::Completed)
}

pub async fn schedules(ctx: &Ctx, command: SchedulesCommand) -> Result<Exit, CliError> {
    let SchedulesCommand::Ls = command;
    let list = ctx.client.json(&Request::get(&["schedules"])).await?;
    print_list(
        ctx,
        &list,
        "no schedules",
        &["NAME", "CRON", "TYPE", "TARGET", "ENABLED", "LAST FIRED"],
        |schedule| {
            vec![
                Cell::new(text(&schedule["name"])),
                Cell::new(text(&schedule["cron"])),
                Cell::new(text(&schedule["type"])),
                Cell::new(text(&schedule["target"])),
                Cell::new(text(&schedule["enabled"])),
                Cell::new(ago(&schedule["last_fire_at"])),
            ]
        },
    );
    Ok(Exit::Completed)
}
