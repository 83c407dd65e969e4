//! Tracing set-up shared by the three binaries, filtered by `RUST_LOG` or
//! `[log] filter`: to stderr as text or JSON lines (systemd captures stderr
//! into the journal too), or with `format = "journald"` straight to the
//! journal, each event's fields as journal fields prefixed `OPSQUEUE_`
//! (`journalctl OPSQUEUE_OPERATION=<id>`) and its level as the priority.
//! `journald` applies only when stderr is the journal already (systemd's
//! `JOURNAL_STREAM`, as in a unit): the same configuration used by a command
//! in a terminal (`opsqueue-api keys …`) logs text to that terminal.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogConfig;

pub fn init(config: &LogConfig) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&config.filter))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let text = || {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
    };
    // A second init (tests driving several services in one process) fails
    // and is fine: the first subscriber stays.
    let _ = match config.format.as_str() {
        "json" => text().json().flatten_event(true).try_init(),
        "journald" if stderr_is_the_journal() => match tracing_journald::layer() {
            Ok(journal) => tracing_subscriber::registry()
                .with(filter())
                .with(journal.with_field_prefix(Some("OPSQUEUE".into())))
                .try_init()
                .map_err(Into::into),
            Err(e) => {
                let result = text().try_init();
                tracing::warn!(error = %e, "no journal to log to; logging to stderr");
                result
            }
        },
        _ => text().try_init(),
    };
}

/// Whether stderr is the journal stream systemd connected (sd_journal_stream_fd(3)):
/// `JOURNAL_STREAM` names its device and inode.
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat(2) fills `stat` when it returns 0.
    if unsafe { libc::fstat(libc::STDERR_FILENO, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful fstat above.
    let stat = unsafe { stat.assume_init() };
    dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino)
}
