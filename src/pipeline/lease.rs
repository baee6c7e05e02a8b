//! Leases: each instance's pipeline is driven by one replica at a time. The
//! database is the coordinator: a replica takes the lease on the instance
//! row before a step, renews it while the step runs, and a replica that
//! dies loses it when it expires.
//!
//! Taking and holding a lease ride in the writes that begin and record a
//! step (`LeaseTerms`): they cost no writes of their own. A step that
//! follows a wait begins without a write, as the write that began the wait
//! took the lease through it.

use std::future::Future;

use chrono::NaiveDateTime;

use crate::db::models::{InstanceRow, now};
use crate::db::{DbConnection, DbError, queries};
use crate::deps::Deps;

/// Who takes the lease and until when: worked out before a write, applied
/// inside it.
pub(super) struct LeaseTerms {
    owner: String,
    until: NaiveDateTime,
    /// SQLite serves one broker (the file lock sees to that): any earlier
    /// holder was this broker before a restart.
    exclusive: bool,
}

impl LeaseTerms {
    /// A lease of `lease` from `from` (a wait's end), or from now.
    pub(super) fn new(deps: &Deps, from: Option<NaiveDateTime>) -> LeaseTerms {
        let replica = &deps.config.replica;
        let from = from.map_or_else(now, |at| at.max(now()));
        LeaseTerms {
            owner: replica.id.clone(),
            until: from + chrono::Duration::from_std(replica.lease).unwrap_or_default(),
            exclusive: deps.config.database_url.is_sqlite(),
        }
    }

    /// Takes or extends the lease; false if another replica holds it.
    pub(super) async fn take(
        &self,
        c: &mut DbConnection,
        instance_id: &str,
    ) -> Result<bool, DbError> {
        queries::acquire_lease(c, instance_id, &self.owner, self.until, self.exclusive).await
    }

    /// The instance row as taking the lease leaves it.
    pub(super) fn taken_on(&self, mut instance: InstanceRow) -> InstanceRow {
        instance.lease_owner = Some(self.owner.clone());
        instance.lease_expires_at = Some(self.until);
        instance
    }

    /// Gives the lease up, if this replica holds it.
    pub(super) async fn release(
        &self,
        c: &mut DbConnection,
        instance_id: &str,
    ) -> Result<(), DbError> {
        queries::release_lease(c, instance_id, &self.owner).await
    }
}

async fn write(
    deps: &Deps,
    instance_id: &str,
    from: Option<NaiveDateTime>,
    release: bool,
) -> Result<bool, DbError> {
    let terms = LeaseTerms::new(deps, from);
    let id = instance_id.to_string();
    deps.store
        .write("lease", move |c| {
            Box::pin(async move {
                if release {
                    terms.release(c, &id).await.map(|()| true)
                } else {
                    terms.take(c, &id).await
                }
            })
        })
        .await
}

/// An instance this replica creates, with its lease already in the row:
/// its actor begins the first step at once, without a write to take it.
pub fn on_new_instance(deps: &Deps, instance: InstanceRow) -> InstanceRow {
    LeaseTerms::new(deps, None).taken_on(instance)
}

/// Whether this replica holds the instance's lease (as `instance` was
/// read, or as this replica last took it) from `from` (now, or a wait's
/// end) for long enough to begin a step without taking it again: the
/// step's heartbeat renews it after a third of a lease. No other replica
/// can have taken it since: it has not expired.
pub fn held(deps: &Deps, instance: &InstanceRow, from: NaiveDateTime) -> bool {
    let replica = &deps.config.replica;
    let margin = chrono::Duration::from_std(replica.lease / 2).unwrap_or_default();
    instance.lease_owner.as_deref() == Some(replica.id.as_str())
        && instance
            .lease_expires_at
            .is_some_and(|until| until > from.max(now()) + margin)
}

/// Keeps the lease through a wait between steps, so that other replicas
/// leave the instance alone until it has passed (and this replica has had
/// `lease` to go on).
pub async fn hold_until(
    deps: &Deps,
    instance_id: &str,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    write(deps, instance_id, Some(at), false).await
}

pub async fn release(deps: &Deps, instance_id: &str) -> Result<(), DbError> {
    write(deps, instance_id, None, true).await.map(drop)
}

/// Runs `work` under a lease already taken, renewing it as it goes.
/// `None`: another replica took the lease while `work` ran (then `work` is
/// dropped unfinished; steps are idempotent).
pub async fn keep_while<F: Future>(
    deps: &Deps,
    instance_id: &str,
    work: F,
) -> Result<Option<F::Output>, DbError> {
    let heartbeat = async {
        loop {
            tokio::time::sleep(deps.config.replica.lease / 3).await;
            match write(deps, instance_id, None, false).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%instance_id, "lease lost to another replica; stopping this step");
                    return;
                }
                Err(e) => tracing::warn!(%instance_id, error = %e, "could not renew the lease"),
            }
        }
    };
    tokio::select! {
        output = work => Ok(Some(output)),
        () = heartbeat => Ok(None),
    }
}
