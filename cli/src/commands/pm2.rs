//! `opsqueue pm2 …`: the `/api/v1/pm2` routes, the same operations the API
//! enqueues for them. `start NAME` starts an existing app; with spec fields
//! (`script=…`) it creates one (`POST /api/v1/pm2/processes`). `set NAME
//! FIELD…` changes its settings (`PATCH /api/v1/pm2/processes/NAME`).
//! `logs` is an operation on the host: it fires `pm2.logs`, waits, and
//! prints the lines.

use comfy_table::Cell;
use serde_json::{Value, json};

use crate::args::{OnName, Pm2Command};
use crate::client::Request;
use crate::commands::fire::{fire, fire_for_result, typed};
use crate::commands::{Ctx, ago, observed, print_list, print_object};
use crate::error::CliError;
use crate::exit::Exit;
use crate::fields::object;
use crate::output::text;

pub async fn pm2(ctx: &Ctx, command: Pm2Command) -> Result<Exit, CliError> {
    match command {
        Pm2Command::Start {
            name,
            fields,
            fire: args,
        } => {
            let request = if fields.is_empty() {
                Request::post(&["pm2", "processes", &name, "start"])
            } else {
                let mut spec = object(&fields);
                spec.insert("name".into(), json!(name));
                Request::post(&["pm2", "processes"]).body(Value::Object(spec))
            };
            fire(ctx, typed(request, &args), &args.wait).await
        }
        Pm2Command::Set {
            name,
            fields,
            fire: args,
        } => {
            let request =
                Request::patch(&["pm2", "processes", &name]).body(Value::Object(object(&fields)));
            fire(ctx, typed(request, &args), &args.wait).await
        }
        Pm2Command::Stop(on) => verb(ctx, on, "stop").await,
        Pm2Command::Restart(on) => verb(ctx, on, "restart").await,
        Pm2Command::Reload(on) => verb(ctx, on, "reload").await,
        Pm2Command::Delete(on) => {
            let request = Request::delete(&["pm2", "processes", &on.name]);
            fire(ctx, typed(request, &on.fire), &on.fire.wait).await
        }
        Pm2Command::Logs {
            name,
            lines,
            target,
            timeout,
        } => {
            let request = Request::post(&["pm2", "processes", &name, "logs"])
                .query_opt("lines", lines)
                .query_opt("target", target.as_deref());
            let op = match fire_for_result(ctx, request, timeout).await? {
                Ok(op) => op,
                Err(exit) => return Ok(exit),
            };
            if ctx.ui.json() {
                ctx.ui.print_json(&op);
            } else {
                for line in op["result"]["out"].as_array().into_iter().flatten() {
                    println!("{}", text(line));
                }
                for line in op["result"]["err"].as_array().into_iter().flatten() {
                    println!("err: {}", text(line));
                }
            }
            Ok(Exit::Completed)
        }
        Pm2Command::Ls(args) => {
            let list = observed(ctx, &["pm2", "processes"], args.target.as_deref()).await?;
            list_apps(ctx, &list);
            Ok(Exit::Completed)
        }
        Pm2Command::Get { name, target } => {
            let app = observed(ctx, &["pm2", "processes", &name], target.as_deref()).await?;
            print_object(&ctx.ui, &app);
            Ok(Exit::Completed)
        }
    }
}

async fn verb(ctx: &Ctx, on: OnName, verb: &str) -> Result<Exit, CliError> {
    let request = Request::post(&["pm2", "processes", &on.name, verb]);
    fire(ctx, typed(request, &on.fire), &on.fire.wait).await
}

fn list_apps(ctx: &Ctx, list: &Value) {
    print_list(
        ctx,
        list,
        "no apps observed (`opsqueue run pm2.list --wait` observes them)",
        &[
            "NAME",
            "STATUS",
            "MODE",
            "INSTANCES",
            "CPU",
            "MEMORY",
            "RESTARTS",
            "OBSERVED",
        ],
        |app| {
            let instances = app["instances"].as_array().cloned().unwrap_or_default();
            let sum = |key: &str| -> f64 { instances.iter().filter_map(|i| i[key].as_f64()).sum() };
            vec![
                Cell::new(text(&app["name"])),
                ctx.ui.status_cell(&text(&app["status"])),
                Cell::new(text(&app["exec_mode"])),
                Cell::new(instances.len()),
                Cell::new(format!("{:.0}%", sum("cpu_percent"))),
                Cell::new(format!("{:.0} MiB", sum("memory_bytes") / 1_048_576.0)),
                Cell::new(sum("restarts") as u64),
                Cell::new(ago(&app["observed_at"])),
            ]
        },
    );
}
