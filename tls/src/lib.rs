//! opsqueue's TLS settings, shared by the programs that speak HTTPS and
//! touch nothing else: the API serves with [`server_config`], and the
//! clients (the `opsqueue` command and a remote worker) trust a pinned
//! certificate or a private root with [`pinned_config`]. It depends on
//! rustls only, so the API gets no host code through it, and the client
//! gets no database.

mod pinned;
mod server;

pub use pinned::pinned_config;
pub use server::server_config;
