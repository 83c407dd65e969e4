//! Wake-ups between processes, so that an idle worker starts a new operation
//! within milliseconds without polling the database, and a long-polling API
//! request learns at once that its operation ended.
//!
//! Each listening process binds a Unix datagram socket in the wake directory
//! (`<role>-<pid>-<random>.sock`); a process that committed something another
//! role should see sends a one-byte datagram to every socket of that role.
//! A datagram carries no data: it only says "look at the database again".
//! Lost wake-ups are harmless because every listener also polls slowly, and
//! a burst collapses into one look because the listener drains its queue.
//! Sockets left by dead processes refuse datagrams and are removed.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Workers: new pending work, or a cancel request.
    Worker,
    /// API processes: an operation ended (long-polls re-check).
    Api,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Worker => "worker-",
            Role::Api => "api-",
        }
    }
}

fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// A process's own wake-up socket; removed when dropped.
pub struct WakeListener {
    socket: UnixDatagram,
    path: PathBuf,
}

impl WakeListener {
    pub fn bind(dir: &Path, role: Role) -> io::Result<Self> {
        create_dir(dir)?;
        let path = dir.join(format!(
            "{}{}-{:08x}.sock",
            role.prefix(),
            std::process::id(),
            rand::random::<u32>()
        ));
        let socket = UnixDatagram::bind(&path)?;
        // Access is decided by the directory's permissions: the API and the
        // worker may run as different users that share the directory.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(Self { socket, path })
    }

    /// Waits for a wake-up, then swallows any others already queued.
    pub async fn wait(&self) {
        let mut buf = [0u8; 16];
        if self.socket.recv(&mut buf).await.is_err() {
            // Nothing sensible to do; the caller's slow poll covers us.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while self.socket.try_recv(&mut buf).is_ok() {}
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WakeListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends wake-ups; cheap to call after every commit.
pub struct Waker {
    dir: PathBuf,
    socket: StdDatagram,
    known: Mutex<(Option<Instant>, Vec<PathBuf>)>,
}

const RESCAN: Duration = Duration::from_millis(500);

impl Waker {
    pub fn new(dir: &Path) -> io::Result<Self> {
        create_dir(dir)?;
        let socket = StdDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            socket,
            known: Mutex::new((None, Vec::new())),
        })
    }

    /// Wakes every listener of `role`. Never blocks and never fails: a
    /// wake-up that cannot be delivered is covered by the listener's poll.
    pub fn wake(&self, role: Role) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let stale = known.0.is_none_or(|at| at.elapsed() > RESCAN);
        if stale {
            known.1 = std::fs::read_dir(&self.dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                        .collect()
                })
                .unwrap_or_default();
            known.0 = Some(Instant::now());
        }
        known.1.retain(|path| {
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(role.prefix()));
            if !ours {
                return true;
            }
            match self.socket.send_to(b"!", path) {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Nobody is bound: a dead process's socket.
                    let _ = std::fs::remove_file(path);
                    false
                }
                Err(_) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_of_the_right_role_is_woken_and_stale_sockets_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let worker = WakeListener::bind(dir.path(), Role::Worker).unwrap();
        let api = WakeListener::bind(dir.path(), Role::Api).unwrap();
        let dead = dir.path().join("worker-1-dead.sock");
        drop(StdDatagram::bind(&dead).unwrap());
        let waker = Waker::new(dir.path()).unwrap();
        waker.wake(Role::Worker);
        tokio::time::timeout(Duration::from_secs(5), worker.wait())
            .await
            .unwrap();
        assert!(!dead.exists(), "the dead socket was not removed");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), api.wait())
                .await
                .is_err()
        );
        let path = worker.path().to_path_buf();
        drop(worker);
        assert!(!path.exists());
    }
}
