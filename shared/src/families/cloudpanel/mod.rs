//! The `cloudpanel` family (the CloudPanel API) over CloudPanel's `clpctl`:
//! sites (`cloudpanel.site.add` of type php, nodejs, static, python or
//! reverse-proxy; `cloudpanel.site.delete`), databases
//! (`cloudpanel.db.add`), site certificates
//! (`cloudpanel.certificate.install`: Let's Encrypt or uploaded; the
//! private key is a secret field and reaches clpctl as a 0600 file, never
//! as an argument) and panel users (`cloudpanel.user.add`,
//! `cloudpanel.user.delete`). Databases have no delete: clpctl has no
//! command for it (its `db:` commands are `add`, `export`, `import` and
//! `show:master-credentials`).
//!
//! Every field is parsed into a type here, before it can become one of
//! clpctl's `--option=value` arguments. Passwords are secret fields: stored
//! apart, shown as `"***"` in every answer, never printed by `Debug`, and
//! redacted by the worker from every log line and result. clpctl itself
//! takes them as arguments, so `ps` shows them to root while it runs.
//!
//! Observed state: `cloudpanel.list` (the monitor's `refresh-cloudpanel`)
//! records every site (an htdocs directory under a site user's home: clpctl
//! has no `site:list`) and every panel user (`clpctl user:list`). clpctl
//! cannot list databases, so the databases shown are those opsqueue added
//! (recorded as managed by `cloudpanel.db.add`).
//!
//! Sites, their certificates and their databases serialize on
//! `cloudpanel:site:<domain>`, users on `cloudpanel:user:<name>`. Adding or
//! deleting a site or a user checks first whether it is already done, so
//! those are safe to re-run, and so is installing a certificate (a second
//! run installs the same one again); `db:add` cannot be checked (clpctl
//! lists no databases) and is not.

/// Declares a string newtype with its own `parse`, (de)serialized through
/// it by [`crate::parsed_string!`] (the family's files use it for their
/// values that are not names).
macro_rules! string_value {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        crate::parsed_string!($name);
    };
}

mod actions;
mod certificate;
mod config;
mod routes;

pub use actions::*;
pub use certificate::*;
pub use config::*;

use crate::families::family::Family;

/// The `cloudpanel` family, as the one list in `families/mod.rs` names it.
pub static DECLARATION: Family = Family {
    name: FAMILY,
    section: "cloudpanel",
    description: "CloudPanel sites, certificates, databases and users through clpctl",
    catalogue: actions::CATALOGUE,
    routes: routes::ROUTES,
    reach: None,
    refresh: Some("cloudpanel.list"),
};
