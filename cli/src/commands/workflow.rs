//! `opsqueue workflow run FILE | get ID | ls | cancel ID | retry ID`.
//!
//! `run` reads a workflow from a TOML or JSON file, checks it locally with
//! the same rules the API applies (`opsqueue_shared::workflow`: every
//! step's payload through its action's parser, names, dependencies, no
//! cycle, at most 1,000 steps; only what the server's configuration says is
//! left to the server), fires it, and with `--follow` shows each step's
//! state as a tree until the workflow ends (`--wait`: a spinner on the
//! workflow itself). The exit code is the workflow's outcome.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use opsqueue_shared::names::Label;
use opsqueue_shared::workflow::{Refusal, WorkflowBody};
use serde_json::{Value, json};

use crate::args::{WaitArgs, WorkflowCommand, WorkflowRunArgs};
use crate::client::Request;
use crate::commands::Ctx;
use crate::commands::fire::follow_up;
use crate::error::{CliError, FieldError, Problem};
use crate::exit::Exit;
use crate::output::{Ui, elapsed, text};
use crate::watch::Interrupt;

/// How often `--follow` reads the workflow again.
const REFRESH: Duration = Duration::from_millis(300);

pub async fn workflow(ctx: &Ctx, command: WorkflowCommand) -> Result<Exit, CliError> {
    match command {
        WorkflowCommand::Run(args) => run(ctx, args).await,
        WorkflowCommand::Get { id } => {
            let view = ctx.client.json(&Request::get(&["workflows", &id])).await?;
            show(ctx, &view);
            Ok(Exit::Completed)
        }
        WorkflowCommand::Ls => list(ctx).await,
        WorkflowCommand::Cancel { id, no_compensate } => {
            let body = json!({"compensate": !no_compensate});
            let request = Request::post(&["workflows", &id, "cancel"]).body(body);
            let view = ctx.client.json(&request).await?;
            show(ctx, &view);
            Ok(Exit::Completed)
        }
        WorkflowCommand::Retry { id, wait } => {
            let interrupt = wait.waits().then(Interrupt::install).transpose()?;
            let view = ctx
                .client
                .json(&Request::post(&["workflows", &id, "retry"]))
                .await?;
            after_fire(ctx, &view, &wait, interrupt).await
        }
    }
}

/// The workflow in `path`: JSON, or TOML when the file says `.toml` (or is
/// not JSON).
fn read(path: &Path) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let toml = path.extension().is_some_and(|e| e == "toml");
    if !toml && let Ok(value) = serde_json::from_str(&text) {
        return Ok(value);
    }
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{}: neither JSON nor TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    serde_json::to_value(table).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

/// A local refusal, shown like the API's 422 (exit 4).
fn refused(file: &Path, refusals: Vec<Refusal>) -> CliError {
    let payload_only = refusals.iter().all(|r| r.payload);
    let (code, title) = if payload_only {
        ("invalid_payload", "Invalid payload")
    } else {
        ("invalid_request", "Invalid request")
    };
    let mut problem = Problem::local(
        422,
        code,
        title,
        format!(
            "{} was checked here and not sent: {}",
            file.display(),
            refusals
                .iter()
                .map(|r| format!("{}: {}", r.field, r.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    problem.errors = refusals
        .into_iter()
        .map(|r| FieldError {
            field: r.field,
            message: r.message,
        })
        .collect();
    CliError::Refused {
        problem: Box::new(problem),
        body: None,
    }
}

async fn run(ctx: &Ctx, args: WorkflowRunArgs) -> Result<Exit, CliError> {
    let mut body = read(&args.file)?;
    if let Some(object) = body.as_object_mut() {
        if let Some(target) = &args.target {
            object.insert("target".into(), json!(target));
        }
        if let Some(source) = &args.source {
            object.insert("source".into(), json!(source));
        }
    }
    let source = match &args.source {
        Some(source) => Label::parse(source).map_err(|e| CliError::usage(e.to_string()))?,
        None => Label::api(),
    };
    WorkflowBody::from_json(body.clone())
        .map_err(|r| refused(&args.file, vec![r]))?
        .parse(source)
        .map_err(|r| refused(&args.file, r))?;
    let interrupt = args.wait.waits().then(Interrupt::install).transpose()?;
    let request = Request::post(&["workflows"])
        .body(body)
        .idempotency_key(args.idempotency_key.as_deref());
    let answer = ctx.client.send(&request).await?;
    if answer
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true")
        && !ctx.ui.json()
    {
        eprintln!("(replayed: the workflow first fired with this idempotency key)");
    }
    after_fire(ctx, &answer.body, &args.wait, interrupt).await
}

/// A workflow just accepted: its id (or JSON), then a spinner (`--wait`) or
/// the tree of its steps (`--follow`) until it ends.
async fn after_fire(
    ctx: &Ctx,
    view: &Value,
    wait: &WaitArgs,
    interrupt: Option<Interrupt>,
) -> Result<Exit, CliError> {
    if !wait.follow {
        return follow_up(ctx, view, wait, interrupt).await;
    }
    let id = text(&view["id"]);
    if !ctx.ui.json() {
        println!("{id}");
    }
    let mut interrupt = interrupt.expect("installed when waiting");
    let deadline = wait.timeout.map(|t| Instant::now() + t);
    let mut tree = Tree::new(ctx.ui);
    let mut view = view.clone();
    loop {
        tree.draw(&view);
        if let Some(exit) = Exit::of_status(view["status"].as_str().unwrap_or("")) {
            if ctx.ui.json() {
                ctx.ui.print_json(&view);
            }
            return Ok(exit);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "timed out waiting: workflow {id} is still {}.\nkeep waiting with: opsqueue ops wait {id}",
                text(&view["status"])
            );
            return Ok(Exit::TimedOut);
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            () = interrupt.recv() => {
                if wait.cancel_on_interrupt {
                    let request = Request::post(&["workflows", &id, "cancel"]);
                    view = ctx.client.json(&request).await?;
                    continue;
                }
                eprintln!(
                    "stopped waiting: workflow {id} is still {} (not cancelled).\nresume with: opsqueue ops wait {id}",
                    text(&view["status"])
                );
                return Ok(Exit::Interrupted);
            }
        }
        view = ctx.client.json(&Request::get(&["workflows", &id])).await?;
    }
}

/// The steps of a workflow as lines: one per step with its state and what
/// it waits on, then its compensations.
pub fn tree_lines(ui: &Ui, view: &Value) -> Vec<String> {
    let name = view["name"]
        .as_str()
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "workflow {}{name}: {}",
        text(&view["id"]),
        ui.status(&text(&view["status"]))
    )];
    let steps = view["steps"].as_array().cloned().unwrap_or_default();
    let compensations = view["compensations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let width = steps
        .iter()
        .map(|s| text(&s["name"]).chars().count())
        .max()
        .unwrap_or(0);
    let last_step = steps.len().saturating_sub(1);
    for (i, step) in steps.iter().enumerate() {
        let branch = if i == last_step && compensations.is_empty() {
            "└─"
        } else {
            "├─"
        };
        lines.push(format!("{branch} {}", step_line(ui, step, width)));
    }
    if !compensations.is_empty() {
        lines.push("└─ compensations".to_owned());
        let last = compensations.len() - 1;
        for (i, undo) in compensations.iter().enumerate() {
            let branch = if i == last { "└─" } else { "├─" };
            let status = text(&undo["status"]);
            lines.push(format!(
                "   {branch} {} {} {}",
                mark(ui, &status),
                text(&undo["compensates"]),
                ui.status(&status)
            ));
        }
    }
    lines
}

fn mark(ui: &Ui, status: &str) -> &'static str {
    match (ui.fancy, status) {
        (true, "completed") => "✓",
        (true, "failed") => "✗",
        (true, "cancelled") => "⊘",
        (true, "running") => "●",
        (true, _) => "○",
        (false, _) => "-",
    }
}

fn step_line(ui: &Ui, step: &Value, width: usize) -> String {
    let status = text(&step["status"]);
    let mut line = format!(
        "{} {:width$} {}",
        mark(ui, &status),
        text(&step["name"]),
        ui.status(&status)
    );
    if let Some(took) = elapsed(&step["started_at"], &step["finished_at"]) {
        line.push_str(&format!(" {took}"));
    }
    let waits: Vec<String> = step["depends_on"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if status == "pending" && !waits.is_empty() {
        line.push_str(&ui.dim(&format!(" (after {})", waits.join(", "))));
    }
    if !step["error"].is_null() && matches!(status.as_str(), "failed" | "cancelled") {
        line.push_str(&format!(
            ": {}: {}",
            text(&step["error"]["code"]),
            text(&step["error"]["message"])
        ));
    }
    line
}

/// Draws the tree: redrawn in place on a terminal, else a line per step
/// whenever its state changes.
struct Tree {
    ui: Ui,
    drawn: usize,
    seen: BTreeMap<String, String>,
}

impl Tree {
    fn new(ui: Ui) -> Self {
        Self {
            ui,
            drawn: 0,
            seen: BTreeMap::new(),
        }
    }

    fn draw(&mut self, view: &Value) {
        if self.ui.json() {
            return;
        }
        if self.ui.fancy {
            let term = console::Term::stdout();
            let _ = term.clear_last_lines(self.drawn);
            let lines = tree_lines(&self.ui, view);
            for line in &lines {
                let _ = term.write_line(line);
            }
            self.drawn = lines.len();
            return;
        }
        let rows = view["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| (text(&s["name"]), text(&s["status"])))
            .chain(
                view["compensations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        (
                            format!("compensate {}", text(&c["compensates"])),
                            text(&c["status"]),
                        )
                    }),
            )
            .chain([("workflow".to_owned(), text(&view["status"]))]);
        for (name, status) in rows {
            if self.seen.get(&name) != Some(&status) {
                println!("{name}: {status}");
                self.seen.insert(name, status);
            }
        }
    }
}

fn show(ctx: &Ctx, view: &Value) {
    if ctx.ui.json() {
        ctx.ui.print_json(view);
        return;
    }
    for line in tree_lines(&ctx.ui, view) {
        println!("{line}");
    }
}

async fn list(ctx: &Ctx) -> Result<Exit, CliError> {
    let page = ctx.client.json(&Request::get(&["workflows"])).await?;
    if ctx.ui.json() {
        ctx.ui.print_json(&page);
        return Ok(Exit::Completed);
    }
    let mut table = ctx
        .ui
        .table(&["ID", "NAME", "STATUS", "PHASE", "STEPS", "CREATED"]);
    for item in page["items"].as_array().into_iter().flatten() {
        let steps: Vec<String> = item["steps"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(status, count)| format!("{count} {status}"))
            .collect();
        table.add_row(vec![
            comfy_table::Cell::new(text(&item["id"])),
            comfy_table::Cell::new(text(&item["name"])),
            ctx.ui.status_cell(&text(&item["status"])),
            comfy_table::Cell::new(text(&item["phase"])),
            comfy_table::Cell::new(steps.join(", ")),
            comfy_table::Cell::new(text(&item["created_at"])),
        ]);
    }
    ctx.ui.print_table(table);
    Ok(Exit::Completed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Format;

    #[test]
    fn a_toml_workflow_reads_as_the_json_the_api_takes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deploy.toml");
        std::fs::write(
            &file,
            "name = \"deploy\"\n\n[[steps]]\nname = \"a\"\ntype = \"diag.noop\"\n\n\
             [[steps]]\nname = \"b\"\ntype = \"diag.sleep\"\ndepends_on = [\"a\"]\n\
             payload = { seconds = 1 }\n",
        )
        .unwrap();
        let value = read(&file).unwrap();
        assert_eq!(value["steps"][1]["payload"]["seconds"], 1);
        assert!(
            WorkflowBody::from_json(value)
                .unwrap()
                .parse(Label::api())
                .is_ok()
        );
    }

    #[test]
    fn the_tree_shows_each_step_and_what_it_waits_on() {
        let ui = Ui {
            format: Format::Table,
            fancy: false,
        };
        let view = json!({"id": "w1", "name": "deploy", "status": "running", "steps": [
            {"name": "a", "status": "completed", "depends_on": []},
            {"name": "bb", "status": "pending", "depends_on": ["a"]},
        ], "compensations": []});
        let lines = tree_lines(&ui, &view);
        assert_eq!(lines[0], "workflow w1 deploy: running");
        assert_eq!(lines[1], "├─ - a  completed");
        assert_eq!(lines[2], "└─ - bb pending (after a)");
    }
}
