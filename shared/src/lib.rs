//! opsqueue's shared library: the operation model and its state machine, the
//! action catalogue that parses requests into typed actions, the store (the
//! only place SQL lives), configuration, cross-process wake-ups and
//! telemetry, and the bodies of the agent protocol remote workers speak. No
//! HTTP here and no access to the host: the API links this crate too, and
//! must never be able to change the host.

pub mod agent;
pub mod config;
pub mod cron;
pub mod families;
pub mod names;
pub mod operation;
pub mod process;
pub mod secret;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod time;
pub mod wake;
pub mod workflow;

pub use config::Config;
pub use families::{Action, ActionError};
pub use operation::{
    Fence, NewOperation, Operation, OperationError, OperationId, OperationRequest,
};
pub use status::Status;
pub use store::{Store, StoreError};

/// The version all three binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
