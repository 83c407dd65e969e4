//! `opsqueue targets ls` and `opsqueue schedules ls`.
//!
//! Targets: the API has no `GET /api/v1/targets` yet, so the list is made
//! from `GET /api/v1/workers`: one row per target a running worker serves,
//! with that worker's heartbeat. `--output json` prints the workers' JSON
//! as the API sends it. When the targets route lands, this reads it.

use comfy_table::Cell;
use serde_json::Value;

use crate::args::{SchedulesCommand, TargetsCommand};
use crate::client::Request;
use crate::commands::{Ctx, ago, print_list};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::{age, text};

pub async fn targets(ctx: &Ctx, command: TargetsCommand) -> Result<Exit, CliError> {
    let TargetsCommand::Ls = command;
    let workers = ctx.client.json(&Request::get(&["workers"])).await?;
    if ctx.ui.json() {
        ctx.ui.print_json(&workers);
        return Ok(Exit::Completed);
    }
    let mut rows: Vec<(String, &Value)> = Vec::new();
    for worker in workers["items"].as_array().into_iter().flatten() {
        for target in worker["targets"].as_array().into_iter().flatten() {
            rows.push((text(target), worker));
        }
    }
    if rows.is_empty() {
        eprintln!("no worker is running, so no target is served");
        return Ok(Exit::Completed);
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut table = ctx.ui.table(&[
        "TARGET",
        "WORKER",
        "HOST",
        "DRIVERS",
        "SOURCES",
        "HEARTBEAT",
    ]);
    for (target, worker) in rows {
        let sources = match worker["sources"].as_array() {
            Some(sources) => sources.iter().map(text).collect::<Vec<_>>().join(","),
            None => "all".to_owned(),
        };
        let drivers = worker["drivers"]
            .as_array()
            .map(|d| d.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        table.add_row(vec![
            Cell::new(target),
            Cell::new(text(&worker["id"])),
            Cell::new(text(&worker["host"])),
            Cell::new(drivers),
            Cell::new(sources),
            Cell::new(format!("{} ago", age(&worker["heartbeat_at"]))),
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
