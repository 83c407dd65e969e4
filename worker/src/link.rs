//! Where this worker's store is: the SQLite file beside it (local), or the
//! API over HTTPS (remote, `[worker] api_url`). The writer sends its
//! batches there, and the drivers read what they need of the store through
//! it (the objects opsqueue manages on their target), so a driver runs the
//! same on either.

use std::sync::Arc;

use opsqueue_shared::Store;
use opsqueue_shared::agent::ManagedQuery;
use opsqueue_shared::store::{ManagedObject, StoreError, managed_list};

use crate::remote::Agent;

/// The worker's store; cheap to clone.
#[derive(Clone, Debug)]
pub enum Link {
    /// The database beside the worker.
    Local(Store),
    /// The API, with this worker's agent key.
    Remote(Arc<Agent>),
}

impl From<Store> for Link {
    fn from(store: Store) -> Self {
        Link::Local(store)
    }
}

impl Link {
    pub fn is_remote(&self) -> bool {
        matches!(self, Link::Remote(_))
    }

    /// The database, when it is beside the worker.
    pub fn store(&self) -> Option<&Store> {
        match self {
            Link::Local(store) => Some(store),
            Link::Remote(_) => None,
        }
    }

    /// Objects opsqueue manages of one kind on `target`; `name` narrows to
    /// one.
    pub async fn managed_list(
        &self,
        target: &str,
        family: &str,
        kind: &str,
        name: Option<&str>,
    ) -> Result<Vec<ManagedObject>, StoreError> {
        let query = ManagedQuery {
            target: target.to_owned(),
            family: family.to_owned(),
            kind: kind.to_owned(),
            name: name.map(str::to_owned),
        };
        match self {
            Link::Local(store) => {
                store
                    .call(move |s| {
                        s.read(|c| {
                            managed_list(
                                c,
                                &query.target,
                                &query.family,
                                &query.kind,
                                query.name.as_deref(),
                            )
                        })
                    })
                    .await
            }
            Link::Remote(agent) => agent.managed_list(&query).await,
        }
    }
}
