//! `opsqueue caddy …`: the `/api/v1/caddy` routes, the same operations the
//! API enqueues for them (`caddy.site.add`, `caddy.site.remove`,
//! `caddy.reload`), and the site list as last observed.

use comfy_table::Cell;
use serde_json::{Value, json};

use crate::args::CaddyCommand;
use crate::client::Request;
use crate::commands::fire::{fire, typed};
use crate::commands::{Ctx, ago, observed, print_list};
use crate::error::CliError;
use crate::exit::Exit;
use crate::output::text;

pub async fn caddy(ctx: &Ctx, command: CaddyCommand) -> Result<Exit, CliError> {
    match command {
        CaddyCommand::Add {
            domain,
            upstream,
            fire: args,
        } => {
            let request = Request::post(&["caddy", "sites"])
                .body(json!({"domain": domain, "upstream": upstream}));
            fire(ctx, typed(request, &args), &args.wait).await
        }
        CaddyCommand::Remove(on) => {
            let request = Request::delete(&["caddy", "sites", &on.name]);
            fire(ctx, typed(request, &on.fire), &on.fire.wait).await
        }
        CaddyCommand::Reload { fire: args } => {
            fire(
                ctx,
                typed(Request::post(&["caddy", "reload"]), &args),
                &args.wait,
            )
            .await
        }
        CaddyCommand::Ls(args) => {
            let list = observed(ctx, &["caddy", "sites"], args.target.as_deref()).await?;
            list_sites(ctx, &list);
            Ok(Exit::Completed)
        }
    }
}

fn list_sites(ctx: &Ctx, list: &Value) {
    print_list(
        ctx,
        list,
        "no sites observed (`opsqueue run caddy.list --wait` observes them)",
        &["DOMAIN", "UPSTREAMS", "MANAGED", "OBSERVED"],
        |site| {
            let upstreams = match site["upstreams"].as_array() {
                Some(list) => list.iter().map(text).collect::<Vec<_>>().join(", "),
                None => text(&site["managed"]["upstream"]),
            };
            vec![
                Cell::new(text(&site["domain"])),
                Cell::new(upstreams),
                Cell::new(if site["managed"].is_null() { "" } else { "yes" }),
                Cell::new(ago(&site["observed_at"])),
            ]
        },
    );
}
