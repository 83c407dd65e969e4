//! `opsqueue systemd …`: the `/api/v1/systemd` routes, the same operations
//! the API enqueues for them. `logs` is an operation on the host: it fires
//! `systemd.logs`, waits, and prints the journal lines of its result.

use comfy_table::Cell;
use serde_json::Value;

use crate::args::{OnName, SystemdCommand};
use crate::client::Request;
use crate::commands::fire::{fire, fire_for_result, typed};
use crate::commands::{Ctx, ago, observed, print_list, print_object};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::text;

pub async fn systemd(ctx: &Ctx, command: SystemdCommand) -> Result<Exit, CliError> {
    match command {
        SystemdCommand::Start(on) => verb(ctx, on, "start").await,
        SystemdCommand::Stop(on) => verb(ctx, on, "stop").await,
        SystemdCommand::Restart(on) => verb(ctx, on, "restart").await,
        SystemdCommand::Reload(on) => verb(ctx, on, "reload").await,
        SystemdCommand::Enable(on) => verb(ctx, on, "enable").await,
        SystemdCommand::Disable(on) => verb(ctx, on, "disable").await,
        SystemdCommand::Status(on) => verb(ctx, on, "status").await,
        SystemdCommand::Logs {
            unit,
            lines,
            since,
            target,
            timeout,
        } => {
            let request = Request::post(&["systemd", "units", &unit, "logs"])
                .query_opt("lines", lines)
                .query_opt("since", since.as_deref())
                .query_opt("target", target.as_deref());
            let op = match fire_for_result(ctx, request, timeout).await? {
                Ok(op) => op,
                Err(exit) => return Ok(exit),
            };
            if ctx.ui.json() {
                ctx.ui.print_json(&op);
            } else {
                for line in op["result"]["lines"].as_array().into_iter().flatten() {
                    println!("{}", journal_line(line));
                }
            }
            Ok(Exit::Completed)
        }
        SystemdCommand::Ls(args) => {
            let list = observed(ctx, &["systemd", "units"], args.target.as_deref()).await?;
            list_units(ctx, &list);
            Ok(Exit::Completed)
        }
        SystemdCommand::Get { unit, target } => {
            let found = observed(ctx, &["systemd", "units", &unit], target.as_deref()).await?;
            print_object(&ctx.ui, &found);
            Ok(Exit::Completed)
        }
    }
}

async fn verb(ctx: &Ctx, on: OnName, verb: &str) -> Result<Exit, CliError> {
    let request = Request::post(&["systemd", "units", &on.name, verb]);
    fire(ctx, typed(request, &on.fire), &on.fire.wait).await
}

/// `time identifier[pid]: message`, like journalctl's short output.
fn journal_line(line: &Value) -> String {
    let who = match (text(&line["identifier"]), text(&line["pid"])) {
        (id, pid) if !id.is_empty() && !pid.is_empty() => format!("{id}[{pid}]: "),
        (id, _) if !id.is_empty() => format!("{id}: "),
        _ => String::new(),
    };
    format!("{} {who}{}", text(&line["time"]), text(&line["message"]))
}

fn list_units(ctx: &Ctx, list: &Value) {
    print_list(
        ctx,
        list,
        "no units observed (`opsqueue run systemd.refresh --wait` observes them)",
        &["UNIT", "ACTIVE", "SUB", "FILE", "MANAGED", "OBSERVED"],
        |unit| {
            vec![
                Cell::new(text(&unit["unit"])),
                Cell::new(text(&unit["active_state"])),
                Cell::new(text(&unit["sub_state"])),
                Cell::new(text(&unit["unit_file_state"])),
                Cell::new(if unit["managed"].is_null() { "" } else { "yes" }),
                Cell::new(ago(&unit["observed_at"])),
            ]
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_journal_line_reads_like_journalctl() {
        let line = json!({"time": "2024-05-01T12:00:00Z", "identifier": "nginx", "pid": 42, "message": "started"});
        assert_eq!(
            journal_line(&line),
            "2024-05-01T12:00:00Z nginx[42]: started"
        );
    }
}
