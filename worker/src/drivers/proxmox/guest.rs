//! Where a guest is and what state it is in, as PVE reports it, and the
//! observation the API serves for it (the dashboard's field names: status,
//! CPU, memory, disk, network, uptime).
//!
//! The guest is found in `/cluster/resources?type=vm` (every VM and
//! container of the cluster with its current node), so an action follows a
//! guest that migrated; its power state comes from `…/status/current`,
//! which alone tells a paused VM (`qmpstatus`) from a running one.

use opsqueue_shared::families::proxmox::{GuestType, VmId};
use serde_json::{Value, json};

use super::client::{PveClient, codes};
use crate::drivers::driver::DriverError;

/// A guest as `/cluster/resources` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub vmid: VmId,
    pub guest_type: GuestType,
    /// The PVE node it is on now.
    pub node: String,
    pub name: Option<String>,
    pub lock: Option<String>,
    /// The `/cluster/resources` entry.
    pub resource: Value,
}

/// Every guest of the cluster, as `/cluster/resources?type=vm` lists them.
pub async fn list(client: &PveClient) -> Result<Vec<Located>, DriverError> {
    let resources = client
        .get(&["cluster", "resources"], &[("type", "vm".into())])
        .await?;
    let Value::Array(items) = resources else {
        return Err(DriverError::retryable(
            codes::BAD_RESPONSE,
            "/cluster/resources is not a list",
        ));
    };
    Ok(items.into_iter().filter_map(located).collect())
}

fn located(item: Value) -> Option<Located> {
    let guest_type = GuestType::parse(item.get("type")?.as_str()?)?;
    let vmid = VmId::try_from(item.get("vmid")?.as_u64()?).ok()?;
    let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Located {
        vmid,
        guest_type,
        node: text("node")?,
        name: text("name"),
        lock: text("lock").filter(|l| !l.is_empty()),
        resource: item,
    })
}

/// The guest with this vmid, wherever it is in the cluster.
pub async fn locate(client: &PveClient, vmid: VmId) -> Result<Option<Located>, DriverError> {
    Ok(list(client).await?.into_iter().find(|g| g.vmid == vmid))
}

/// Like [`locate`], but a missing guest is a permanent error.
pub async fn find(client: &PveClient, vmid: VmId) -> Result<Located, DriverError> {
    locate(client, vmid).await?.ok_or_else(|| {
        DriverError::permanent(
            codes::GUEST_NOT_FOUND,
            format!("no VM or container {vmid} in this node's cluster"),
        )
    })
}

/// `…/{qemu|lxc}/{vmid}/status/current` on the guest's node.
pub async fn current(client: &PveClient, guest: &Located) -> Result<Value, DriverError> {
    let vmid = guest.vmid.to_string();
    client
        .get(
            &[
                "nodes",
                &guest.node,
                guest.guest_type.as_str(),
                &vmid,
                "status",
                "current",
            ],
            &[],
        )
        .await
}

/// The power state the dashboard shows: `running`, `stopped`, `paused`
/// (a VM paused in place), `suspended` (a VM hibernated to disk) or
/// `unknown` (its node is unreachable).
pub fn power_state(resource: &Value, current: Option<&Value>) -> String {
    let field = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let status = field(current, "status")
        .or_else(|| field(Some(resource), "status"))
        .unwrap_or_else(|| "unknown".into());
    let qmp = field(current, "qmpstatus");
    let lock = field(current, "lock").or_else(|| field(Some(resource), "lock"));
    match (status.as_str(), qmp.as_deref(), lock.as_deref()) {
        ("running", Some("paused" | "suspended" | "prelaunch"), _) => "paused".into(),
        ("stopped", _, Some("suspended")) => "suspended".into(),
        ("running" | "stopped", _, _) => status,
        _ => "unknown".into(),
    }
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn percent(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        (used / total * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

/// What the API serves for one guest; `current` (from `status/current`)
/// refines the cluster's figures when it was read.
pub fn observation(guest: &Located, current: Option<&Value>) -> Value {
    let source = current.unwrap_or(&guest.resource);
    let pick = |key: &str| {
        let here = number(source, key);
        if here != 0.0 {
            here
        } else {
            number(&guest.resource, key)
        }
    };
    let (mem, maxmem) = (pick("mem"), pick("maxmem"));
    let (disk, maxdisk) = (pick("disk"), pick("maxdisk"));
    let cpus = number(source, "cpus");
    let cpu_count = if cpus > 0.0 { cpus } else { pick("maxcpu") };
    json!({
        "vmid": guest.vmid.get(),
        "name": guest.name,
        "type": guest.guest_type.as_str(),
        "resource_type": guest.guest_type.resource_type(),
        "node": guest.node,
        "status": power_state(&guest.resource, current),
        "lock": current
            .and_then(|c| c.get("lock"))
            .and_then(Value::as_str)
            .or(guest.lock.as_deref()),
        "template": number(&guest.resource, "template") != 0.0,
        "uptime": pick("uptime") as u64,
        "cpu_usage": (pick("cpu") * 1000.0).round() / 10.0,
        "cpu_count": cpu_count,
        "memory_usage": mem as u64,
        "memory_total": maxmem as u64,
        "memory_percentage": percent(mem, maxmem),
        "disk_usage": disk as u64,
        "disk_total": maxdisk as u64,
        "disk_percentage": percent(disk, maxdisk),
        "network_in": pick("netin") as u64,
        "network_out": pick("netout") as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(resource: Value) -> Located {
        located(resource).unwrap()
    }

    #[test]
    fn a_paused_vm_and_a_hibernated_one_are_told_apart() {
        let resource = json!({"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "status": "running"});
        assert_eq!(power_state(&resource, None), "running");
        assert_eq!(
            power_state(
                &resource,
                Some(&json!({"status": "running", "qmpstatus": "paused"}))
            ),
            "paused"
        );
        assert_eq!(
            power_state(
                &resource,
                Some(&json!({"status": "stopped", "lock": "suspended"}))
            ),
            "suspended"
        );
        assert_eq!(power_state(&json!({"status": "unknown"}), None), "unknown");
    }

    #[test]
    fn an_observation_carries_the_dashboards_figures() {
        let guest = vm(
            json!({"id": "lxc/200", "type": "lxc", "vmid": 200, "node": "pve2",
            "name": "ct1", "status": "running", "cpu": 0.155, "maxcpu": 2, "mem": 512, "maxmem": 1024,
            "disk": 1, "maxdisk": 4, "netin": 10, "netout": 20, "uptime": 86400}),
        );
        let data = observation(&guest, None);
        assert_eq!(data["resource_type"], "lxc");
        assert_eq!(data["cpu_usage"], 15.5);
        assert_eq!(data["cpu_count"], 2.0);
        assert_eq!(data["memory_percentage"], 50.0);
        assert_eq!(data["disk_percentage"], 25.0);
        assert_eq!(data["network_out"], 20);
        assert_eq!(data["uptime"], 86400);
        assert!(located(json!({"type": "node", "node": "pve1"})).is_none());
    }
}
