//! Who a process is, in a form another process on the same host can check:
//! host name, pid, the pid's start time (so a recycled pid is not mistaken
//! for the same process) and the kernel's boot id (so a reboot is seen). The
//! monitor uses it to reap the claims of a worker that died, at once, rather
//! than waiting for its lease.

use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub host: String,
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22: clock ticks after boot.
    pub start_ticks: u64,
    pub boot_id: String,
}

impl ProcessIdentity {
    pub fn current() -> io::Result<Self> {
        let pid = std::process::id();
        Ok(Self {
            host: hostname(),
            pid,
            start_ticks: start_ticks(pid)?
                .ok_or_else(|| io::Error::other("no /proc entry for ourselves"))?,
            boot_id: boot_id()?,
        })
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

/// The start time of `pid`, or `None` if there is no such process.
pub fn start_ticks(pid: u32) -> io::Result<Option<u64>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) may hold spaces and parentheses: the fields
    // after it start past the last ')'. Field 3 is index 0 there; 22 is 19.
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("unreadable /proc stat"))?;
    let field = after_comm
        .split_whitespace()
        .nth(19)
        .ok_or_else(|| io::Error::other("short /proc stat"))?;
    // A zombie still has its entry until reaped; it is not alive.
    if after_comm.split_whitespace().next() == Some("Z") {
        return Ok(None);
    }
    field
        .parse()
        .map(Some)
        .map_err(|_| io::Error::other("bad start time in /proc stat"))
}

/// How long `pid` has been running (its start time against the system's
/// uptime), or `None` if there is no such process.
pub fn running_for(pid: u32) -> io::Result<Option<std::time::Duration>> {
    let Some(started) = start_ticks(pid)? else {
        return Ok(None);
    };
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|secs| secs.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/uptime"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let secs = (uptime - started as f64 / ticks).max(0.0);
    Ok(Some(std::time::Duration::from_secs_f64(secs)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// On another host: only its heartbeat can tell.
    Unknown,
}

/// Whether the process `identity` describes still runs, seen from here.
pub fn liveness(identity: &ProcessIdentity) -> Liveness {
    if identity.host != hostname() {
        return Liveness::Unknown;
    }
    match boot_id() {
        Ok(now) if now != identity.boot_id => return Liveness::Dead,
        Ok(_) => {}
        Err(_) => return Liveness::Unknown,
    }
    match start_ticks(identity.pid) {
        Ok(Some(ticks)) if ticks == identity.start_ticks => Liveness::Alive,
        Ok(_) => Liveness::Dead,
        Err(_) => Liveness::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_identity_is_not() {
        let me = ProcessIdentity::current().unwrap();
        assert_eq!(liveness(&me), Liveness::Alive);
        let recycled = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(liveness(&recycled), Liveness::Dead);
        let rebooted = ProcessIdentity {
            boot_id: "other".into(),
            ..me.clone()
        };
        assert_eq!(liveness(&rebooted), Liveness::Dead);
        let remote = ProcessIdentity {
            host: "elsewhere.invalid".into(),
            ..me
        };
        assert_eq!(liveness(&remote), Liveness::Unknown);
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(start_ticks(pid).unwrap(), None);
    }
}
