//! Firing an operation and what follows: print its id (or, with `--output
//! json`, the API's JSON), then wait or follow when asked. Every command
//! that enqueues goes through here, so they all behave like `opsqueue run`.

use std::time::Instant;

use serde_json::Value;

use crate::args::{FireArgs, WaitArgs};
use crate::client::Request;
use crate::commands::Ctx;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::text;
use crate::watch::{Interrupt, Lines, WaitOptions, watch};

/// A typed route's request with `--target` (as `?target=`) and
/// `--idempotency-key` (as the header) applied.
pub fn typed<'a>(request: Request<'a>, fire: &'a FireArgs) -> Request<'a> {
    request
        .query_opt("target", fire.target.as_deref())
        .idempotency_key(fire.idempotency_key.as_deref())
}

/// Sends `request` (answered `202` + the operation) and goes on as
/// `wait` says.
pub async fn fire(ctx: &Ctx, request: Request<'_>, wait: &WaitArgs) -> Result<Exit, CliError> {
    // Before the 202: a Ctrl-C from here on only stops the wait.
    let interrupt = if wait.waits() {
        Some(Interrupt::install()?)
    } else {
        None
    };
    let answer = ctx.client.send(&request).await?;
    let replayed = answer
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true");
    if replayed && !ctx.ui.json() {
        eprintln!("(replayed: the operation first fired with this idempotency key)");
    }
    follow_up(ctx, &answer.body, wait, interrupt).await
}

/// Prints an operation just accepted (by a fire, a retry, a cancel) and
/// waits for it when asked.
pub async fn follow_up(
    ctx: &Ctx,
    operation: &Value,
    wait: &WaitArgs,
    interrupt: Option<Interrupt>,
) -> Result<Exit, CliError> {
    let id = text(&operation["id"]);
    if id.is_empty() {
        return Err(CliError::BadAnswer {
            url: ctx.client.base().to_owned(),
            cause: format!("an accepted operation without an id: {operation}"),
        });
    }
    let Some(mut interrupt) = interrupt.filter(|_| wait.waits()) else {
        if ctx.ui.json() {
            ctx.ui.print_json(operation);
        } else {
            println!("{id}");
        }
        return Ok(Exit::Completed);
    };
    if !ctx.ui.json() {
        println!("{id}");
    }
    let options = WaitOptions {
        lines: match (wait.follow, ctx.ui.json()) {
            (false, _) => Lines::Off,
            (true, false) => Lines::Stdout,
            (true, true) => Lines::Stderr,
        },
        deadline: wait.timeout.map(|t| Instant::now() + t),
        cancel_on_interrupt: wait.cancel_on_interrupt,
        summary: true,
    };
    let watched = watch(&ctx.client, &ctx.ui, &id, &options, &mut interrupt).await?;
    if ctx.ui.json() {
        ctx.ui.print_json(&watched.operation);
    }
    Ok(watched.exit)
}

/// Fires `request` and waits for its result (for the reads that are
/// operations: pm2 and systemd logs). `Err(exit)` when it did not
/// complete; the reason is already printed.
pub async fn fire_for_result(
    ctx: &Ctx,
    request: Request<'_>,
    timeout: Option<std::time::Duration>,
) -> Result<Result<Value, Exit>, CliError> {
    let mut interrupt = Interrupt::install()?;
    let operation = ctx.client.json(&request).await?;
    let id = text(&operation["id"]);
    let options = WaitOptions {
        lines: Lines::Off,
        deadline: timeout.map(|t| Instant::now() + t),
        cancel_on_interrupt: false,
        summary: false,
    };
    let watched = watch(&ctx.client, &ctx.ui, &id, &options, &mut interrupt).await?;
    match watched.exit {
        Exit::Completed => Ok(Ok(watched.operation)),
        exit => {
            if ctx.ui.json() {
                ctx.ui.print_json(&watched.operation);
            } else if matches!(exit, Exit::Failed | Exit::Cancelled) {
                eprintln!("{}", crate::watch::summary(&ctx.ui, &watched.operation));
            }
            Ok(Err(exit))
        }
    }
}
