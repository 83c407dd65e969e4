//! The exit codes a pipeline branches on, in one place: what an operation
//! ended as (0 completed, 1 failed, 2 cancelled), 3 when the wait timed
//! out, 4 when the API refused the request (any 4xx), 5 when the API could
//! not be reached or answered 5xx, 64 for a usage error (`EX_USAGE`,
//! clap's own included) and 130 when Ctrl-C stopped a wait (128 + SIGINT,
//! what a shell reports for an interrupted command).

/// How `opsqueue` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Completed,
    Failed,
    Cancelled,
    TimedOut,
    Refused,
    Unreachable,
    Usage,
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Completed => 0,
            Exit::Failed => 1,
            Exit::Cancelled => 2,
            Exit::TimedOut => 3,
            Exit::Refused => 4,
            Exit::Unreachable => 5,
            Exit::Usage => 64,
            Exit::Interrupted => 130,
        }
    }

    /// The exit of an operation in this status; `None` while it can still
    /// change (pending, running).
    pub fn of_status(status: &str) -> Option<Exit> {
        match status {
            "completed" => Some(Exit::Completed),
            "failed" => Some(Exit::Failed),
            "cancelled" => Some(Exit::Cancelled),
            _ => None,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_ones_the_readme_promises() {
        let codes: Vec<u8> = [
            Exit::Completed,
            Exit::Failed,
            Exit::Cancelled,
            Exit::TimedOut,
            Exit::Refused,
            Exit::Unreachable,
            Exit::Usage,
            Exit::Interrupted,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 64, 130]);
    }

    #[test]
    fn only_terminal_statuses_have_an_exit() {
        assert_eq!(Exit::of_status("completed"), Some(Exit::Completed));
        assert_eq!(Exit::of_status("failed"), Some(Exit::Failed));
        assert_eq!(Exit::of_status("cancelled"), Some(Exit::Cancelled));
        assert_eq!(Exit::of_status("running"), None);
        assert_eq!(Exit::of_status("pending"), None);
    }
}
