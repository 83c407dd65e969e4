//! `opsqueue run TYPE [FIELD…]`: `POST /api/v1/operations` with the type,
//! the payload made of the fields, and the options given; then as
//! [`fire`](super::fire) says.

use serde_json::{Value, json};

use crate::args::RunArgs;
use crate::client::Request;
use crate::commands::Ctx;
use crate::commands::fire::fire;
use crate::error::CliError;
use crate::exit::Exit;
use crate::fields::object;

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<Exit, CliError> {
    let body = body(&args)?;
    let request = Request::post(&["operations"])
        .body(body)
        .idempotency_key(args.fire.idempotency_key.as_deref());
    fire(ctx, request, &args.fire.wait).await
}

/// The enqueue body; the API checks every field (a refusal lists them).
fn body(args: &RunArgs) -> Result<Value, CliError> {
    let mut body = json!({
        "type": args.kind,
        "payload": Value::Object(object(&args.fields)),
    });
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body[key] = value;
        }
    };
    set("target", args.fire.target.clone().map(Value::from));
    set("source", args.source.clone().map(Value::from));
    set("priority", args.priority.map(Value::from));
    set("max_attempts", args.max_attempts.map(Value::from));
    let timeout_secs = match args.op_timeout {
        Some(t) if t.as_secs() == 0 => {
            return Err(CliError::usage("--op-timeout must be at least 1s"));
        }
        Some(t) => Some(Value::from(t.as_secs())),
        None => None,
    };
    set("timeout_secs", timeout_secs);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser as _;

    fn run_args(line: &[&str]) -> RunArgs {
        let mut argv = vec!["opsqueue", "run"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_body_carries_the_payload_and_only_the_options_given() {
        let args = run_args(&["diag.sleep", "seconds:=2", "key=db", "--target", "web-2"]);
        assert_eq!(
            body(&args).unwrap(),
            json!({"type": "diag.sleep", "payload": {"seconds": 2, "key": "db"}, "target": "web-2"})
        );
        let args = run_args(&[
            "diag.noop",
            "--priority",
            "1",
            "--max-attempts",
            "5",
            "--op-timeout",
            "2m",
            "--source",
            "ci",
        ]);
        assert_eq!(
            body(&args).unwrap(),
            json!({"type": "diag.noop", "payload": {}, "priority": 1, "max_attempts": 5,
                   "timeout_secs": 120, "source": "ci"})
        );
    }
}
