//! `opsqueue ops …`: the generic operation routes. `ls` pages through `GET
//! /api/v1/operations` (500 a page) up to `--limit`; `get`, `logs`,
//! `cancel`, `retry` and `wait` take operation ids.

use std::time::Instant;

use comfy_table::Cell;
use serde_json::{Value, json};

use crate::args::{LsArgs, OpsCommand};
use crate::client::Request;
use crate::commands::fire::follow_up;
use crate::commands::{Ctx, cell};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::{age, elapsed, text};
use crate::watch::{Interrupt, Lines, WaitOptions, format_line, watch};

/// The API's largest page of operations.
const MAX_PAGE: u32 = 500;
/// The API's largest page of log lines.
const LOG_PAGE: usize = 10_000;

pub async fn ops(ctx: &Ctx, command: OpsCommand) -> Result<Exit, CliError> {
    match command {
        OpsCommand::Ls(args) => ls(ctx, &args).await,
        OpsCommand::Get { id } => get(ctx, &id).await,
        OpsCommand::Logs { id, follow } => logs(ctx, &id, follow).await,
        OpsCommand::Cancel { id, wait } => {
            let interrupt = wait.waits().then(Interrupt::install).transpose()?;
            let op = ctx
                .client
                .json(&Request::post(&["operations", &id, "cancel"]))
                .await?;
            if !ctx.ui.json() && !wait.waits() {
                eprintln!("{}", cancel_note(&op));
            }
            follow_up(ctx, &op, &wait, interrupt).await
        }
        OpsCommand::Retry { id, wait } => {
            let interrupt = wait.waits().then(Interrupt::install).transpose()?;
            let op = ctx
                .client
                .json(&Request::post(&["operations", &id, "retry"]))
                .await?;
            follow_up(ctx, &op, &wait, interrupt).await
        }
        OpsCommand::Wait {
            ids,
            timeout,
            cancel_on_interrupt,
        } => {
            let mut interrupt = Interrupt::install()?;
            let options = WaitOptions {
                lines: Lines::Off,
                deadline: timeout.map(|t| Instant::now() + t),
                cancel_on_interrupt,
                summary: true,
            };
            let mut worst = Exit::Completed;
            for id in &ids {
                let watched = watch(&ctx.client, &ctx.ui, id, &options, &mut interrupt).await?;
                if ctx.ui.json() {
                    ctx.ui.print_json(&watched.operation);
                }
                worst = worst.max(watched.exit);
                if watched.exit == Exit::Interrupted {
                    break;
                }
            }
            Ok(worst)
        }
    }
}

fn cancel_note(op: &Value) -> String {
    match text(&op["status"]).as_str() {
        "cancelled" => format!("{} cancelled", text(&op["id"])),
        status => format!(
            "{} {status}: cancel requested (its worker stops it)",
            text(&op["id"])
        ),
    }
}

async fn ls(ctx: &Ctx, args: &LsArgs) -> Result<Exit, CliError> {
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut next_cursor;
    loop {
        let left = args.limit - items.len() as u32;
        let request = Request::get(&["operations"])
            .query_opt("status", args.status.map(|s| s.as_str()))
            .query_opt("type", args.kind.as_deref())
            .query_opt("target", args.target.as_deref())
            .query_opt("source", args.source.as_deref())
            .query_opt("resource", args.resource.as_deref())
            .query_opt("since", args.since.as_deref())
            .query("limit", left.min(MAX_PAGE))
            .query_opt("cursor", cursor.as_deref());
        let page = ctx.client.json(&request).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        next_cursor = page["next_cursor"].clone();
        match next_cursor.as_str() {
            Some(next) if (items.len() as u32) < args.limit => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    if ctx.ui.json() {
        ctx.ui
            .print_json(&json!({"items": items, "next_cursor": next_cursor}));
        return Ok(Exit::Completed);
    }
    if items.is_empty() {
        eprintln!("no operations match");
        return Ok(Exit::Completed);
    }
    // RESOURCE only when some operation has one (diag operations do not).
    let resources = items.iter().any(|op| !text(&op["resource"]).is_empty());
    let mut header = vec!["ID", "TYPE", "STATUS", "TARGET"];
    if resources {
        header.push("RESOURCE");
    }
    header.extend(["TRIES", "AGE"]);
    let mut table = ctx.ui.table(&header);
    for op in &items {
        let mut row = vec![
            Cell::new(text(&op["id"])),
            Cell::new(text(&op["type"])),
            ctx.ui.status_cell(&text(&op["status"])),
            Cell::new(text(&op["target"])),
        ];
        if resources {
            row.push(Cell::new(text(&op["resource"])));
        }
        row.extend([
            Cell::new(format!(
                "{}/{}",
                text(&op["attempt"]),
                text(&op["max_attempts"])
            )),
            Cell::new(age(&op["created_at"])),
        ]);
        table.add_row(row);
    }
    ctx.ui.print_table(table);
    if !next_cursor.is_null() {
        eprintln!("(more: raise --limit, or narrow with --status, --type, --since)");
    }
    Ok(Exit::Completed)
}

async fn get(ctx: &Ctx, id: &str) -> Result<Exit, CliError> {
    let op = ctx.client.json(&Request::get(&["operations", id])).await?;
    if ctx.ui.json() {
        ctx.ui.print_json(&op);
        return Ok(Exit::Completed);
    }
    let status = text(&op["status"]);
    let took = elapsed(&op["started_at"], &op["finished_at"])
        .map(|t| format!(" (took {t})"))
        .unwrap_or_default();
    let progress = match (
        text(&op["progress"]["step"]),
        op["progress"]["percent"].as_f64(),
    ) {
        (step, Some(percent)) => format!("{percent:.0}% {step}").trim().to_owned(),
        (step, None) => step,
    };
    let error = if op["error"].is_null() {
        String::new()
    } else {
        format!(
            "{}: {}{}",
            text(&op["error"]["code"]),
            text(&op["error"]["message"]),
            if op["error"]["retryable"] == true {
                " (retryable)"
            } else {
                ""
            }
        )
    };
    let rows = [
        ("id", text(&op["id"])),
        ("type", text(&op["type"])),
        ("status", ctx.ui.status(&status)),
        ("target", text(&op["target"])),
        ("resource", text(&op["resource"])),
        ("source", text(&op["source"])),
        (
            "attempt",
            format!("{} of {}", text(&op["attempt"]), text(&op["max_attempts"])),
        ),
        ("priority", text(&op["priority"])),
        ("progress", progress),
        ("error", error),
        ("result", cell_or_empty(&op["result"])),
        ("payload", cell_or_empty(&op["payload"])),
        ("parent", text(&op["parent_id"])),
        ("idempotency key", text(&op["idempotency_key"])),
        ("worker", text(&op["worker_id"])),
        ("created", text(&op["created_at"])),
        ("started", text(&op["started_at"])),
        ("finished", format!("{}{took}", text(&op["finished_at"]))),
    ];
    ctx.ui.print_fields(&rows);
    Ok(Exit::Completed)
}

fn cell_or_empty(value: &Value) -> String {
    if value.is_null() {
        String::new()
    } else {
        cell(value)
    }
}

async fn logs(ctx: &Ctx, id: &str, follow: bool) -> Result<Exit, CliError> {
    if follow {
        let mut interrupt = Interrupt::install()?;
        let options = WaitOptions {
            lines: if ctx.ui.json() {
                Lines::Json
            } else {
                Lines::Stdout
            },
            deadline: None,
            cancel_on_interrupt: false,
            summary: true,
        };
        let watched = watch(&ctx.client, &ctx.ui, id, &options, &mut interrupt).await?;
        return Ok(watched.exit);
    }
    let mut items: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let page = ctx
            .client
            .json(
                &Request::get(&["operations", id, "logs"])
                    .query("after", after)
                    .query("limit", LOG_PAGE),
            )
            .await?;
        let lines = page["items"].as_array().cloned().unwrap_or_default();
        after = page["next_after"].as_i64().unwrap_or(after);
        let full = lines.len() >= LOG_PAGE;
        items.extend(lines);
        if !full {
            break;
        }
    }
    if ctx.ui.json() {
        ctx.ui
            .print_json(&json!({"items": items, "next_after": after}));
    } else {
        for line in &items {
            println!("{}", format_line(&ctx.ui, line));
        }
    }
    Ok(Exit::Completed)
}
