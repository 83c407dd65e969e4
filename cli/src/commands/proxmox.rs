//! `opsqueue proxmox …`: guest actions on `POST
//! /api/v1/proxmox/nodes/{id}/resources/{vmid}/{action}` (reboot is the
//! route's `restart`), and the registered nodes. The API names nodes by id;
//! a person types the name they registered (`lab`), so a name is resolved
//! to its id with `GET /api/v1/proxmox/nodes` first. An id is used as is.

use comfy_table::Cell;
use serde_json::{Value, json};

use crate::args::{Guest, ProxmoxCommand};
use crate::client::Request;
use crate::commands::fire::{fire, typed};
use crate::commands::{Ctx, ago, print_list};
use crate::error::{CliError, Problem};
use crate::exit::Exit;
use crate::fields::object;
use crate::output::text;

pub async fn proxmox(ctx: &Ctx, command: ProxmoxCommand) -> Result<Exit, CliError> {
    match command {
        ProxmoxCommand::Start(guest) => act(ctx, guest, "start", []).await,
        ProxmoxCommand::Stop(guest) => act(ctx, guest, "stop", []).await,
        ProxmoxCommand::Shutdown(guest) => act(ctx, guest, "shutdown", []).await,
        ProxmoxCommand::Reboot(guest) => act(ctx, guest, "restart", []).await,
        ProxmoxCommand::Suspend(guest) => act(ctx, guest, "suspend", []).await,
        ProxmoxCommand::Resume(guest) => act(ctx, guest, "resume", []).await,
        ProxmoxCommand::Migrate {
            guest,
            to,
            online,
            restart,
        } => {
            let fields = [
                ("target", json!(to)),
                ("online", json!(online)),
                ("restart", json!(restart)),
            ];
            act(ctx, guest, "migrate", fields).await
        }
        ProxmoxCommand::Nodes => {
            let list = ctx
                .client
                .json(&Request::get(&["proxmox", "nodes"]))
                .await?;
            list_nodes(ctx, &list);
            Ok(Exit::Completed)
        }
    }
}

async fn act<const N: usize>(
    ctx: &Ctx,
    guest: Guest,
    route: &str,
    extra: [(&str, Value); N],
) -> Result<Exit, CliError> {
    let node = node_id(ctx, &guest.node).await?;
    let mut body = object(&guest.fields);
    for (key, value) in extra {
        body.insert(key.to_owned(), value);
    }
    if let Some(kind) = &guest.guest_type {
        body.insert("guest_type".into(), json!(kind));
    }
    let vmid = guest.vmid.to_string();
    let request = Request::post(&["proxmox", "nodes", &node, "resources", &vmid, route])
        .body(Value::Object(body));
    fire(ctx, typed(request, &guest.fire), &guest.fire.wait).await
}

/// The node's id: `node` itself when it is one, else the id of the node
/// registered under that name.
async fn node_id(ctx: &Ctx, node: &str) -> Result<String, CliError> {
    if uuid::Uuid::parse_str(node).is_ok() {
        return Ok(node.to_owned());
    }
    let list = ctx
        .client
        .json(&Request::get(&["proxmox", "nodes"]))
        .await?;
    let nodes = list["items"].as_array().cloned().unwrap_or_default();
    if let Some(found) = nodes.iter().find(|n| n["name"] == node) {
        return Ok(text(&found["id"]));
    }
    let names: Vec<String> = nodes.iter().map(|n| text(&n["name"])).collect();
    let known = if names.is_empty() {
        "no node is registered (POST /api/v1/proxmox/nodes)".to_owned()
    } else {
        format!("registered: {}", names.join(", "))
    };
    Err(CliError::Refused {
        problem: Box::new(Problem::local(
            404,
            "not_found",
            "Not found",
            format!("no Proxmox node named {node:?}; {known}"),
        )),
        body: None,
    })
}

fn list_nodes(ctx: &Ctx, list: &Value) {
    print_list(
        ctx,
        list,
        "no Proxmox node is registered",
        &["NAME", "ID", "HOST", "STATUS", "VERSION", "OBSERVED"],
        |node| {
            vec![
                Cell::new(text(&node["name"])),
                Cell::new(text(&node["id"])),
                Cell::new(text(&node["host"])),
                Cell::new(text(&node["status"])),
                Cell::new(text(&node["version"])),
                Cell::new(ago(&node["last_updated"])),
            ]
        },
    );
}
