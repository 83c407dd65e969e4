//! The facts of this host that heartbeats carry to the targets registry:
//! OS, kernel, CPU count, load, memory, free disk on the data paths and
//! uptime, read from `/proc`, `/etc/os-release` and `statvfs`. Each read
//! is cheap (no program runs) and a fact that cannot be read is left out.

use std::path::PathBuf;

use opsqueue_shared::store::{DiskFree, HostFacts};

/// Reads this host's facts now; `data_paths` are the paths whose file
/// systems' free space is reported (those that do not exist are skipped).
pub fn collect(data_paths: &[PathBuf]) -> HostFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = |key: &str| {
        meminfo.lines().find_map(|line| {
            let kib = line.strip_prefix(key)?.strip_prefix(':')?;
            kib.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = mem("MemTotal").map(|kib| kib * 1024);
    let available = mem("MemAvailable").map(|kib| kib * 1024);
    HostFacts {
        os: os_name(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32),
        load: load(),
        memory_total_bytes: total,
        memory_used_bytes: total.zip(available).map(|(t, a)| t.saturating_sub(a)),
        disks: data_paths.iter().filter_map(|p| disk_free(p)).collect(),
        uptime_secs: read_trimmed("/proc/uptime")
            .and_then(|u| u.split_whitespace().next()?.parse().ok()),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn os_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix("PRETTY_NAME=")?;
        Some(value.trim_matches('"').to_owned())
    })
}

fn load() -> Option<[f64; 3]> {
    let text = read_trimmed("/proc/loadavg")?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn disk_free(path: &std::path::Path) -> Option<DiskFree> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is
    // a NUL-terminated string that outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some(DiskFree {
        path: path.display().to_string(),
        free_bytes: stat.f_bavail as u64 * block,
        total_bytes: stat.f_blocks as u64 * block,
    })
}

/// Free bytes on the file system holding `path` (for a driver's check).
pub(crate) fn free_bytes(path: &std::path::Path) -> Option<u64> {
    disk_free(path).map(|d| d.free_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_facts_are_read_and_a_missing_path_is_skipped() {
        let facts = collect(&[PathBuf::from("/"), PathBuf::from("/no/such/path")]);
        assert!(facts.cpus.is_some_and(|n| n >= 1));
        assert!(facts.kernel.is_some());
        assert!(facts.memory_total_bytes > facts.memory_used_bytes);
        assert!(facts.uptime_secs.is_some_and(|u| u > 0.0));
        assert_eq!(facts.disks.len(), 1);
        assert_eq!(facts.disks[0].path, "/");
        assert!(facts.disks[0].total_bytes >= facts.disks[0].free_bytes);
    }
}
