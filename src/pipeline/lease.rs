//! Leases: each instance's pipeline is driven by one replica at a time. The
//! database is the coordinator: a replica takes the lease on the instance
//! row before a step, renews it while the step runs, and a replica that
//! dies loses it when it expires.

use std::future::Future;

use chrono::NaiveDateTime;

use crate::db::models::now;
use crate::db::{DbError, queries};
use crate::deps::Deps;

/// Takes or extends the lease until `lease` past `from` (default: now).
async fn acquire_from(
    deps: &Deps,
    instance_id: &str,
    from: Option<NaiveDateTime>,
) -> Result<bool, DbError> {
    let replica = &deps.config.replica;
    let from = from.map_or_else(now, |at| at.max(now()));
    let until = from + chrono::Duration::from_std(replica.lease).unwrap_or_default();
    let (id, owner) = (instance_id.to_string(), replica.id.clone());
    // SQLite serves one broker (the file lock sees to that): any earlier
    // holder was this broker before a restart.
    let exclusive = deps.config.database_url.is_sqlite();
    deps.store
        .write("acquire_lease", move |c| {
            Box::pin(async move { queries::acquire_lease(c, &id, &owner, until, exclusive).await })
        })
        .await
}

async fn acquire(deps: &Deps, instance_id: &str) -> Result<bool, DbError> {
    acquire_from(deps, instance_id, None).await
}

/// Keeps the lease through a wait between steps, so that other replicas
/// leave the instance alone until it has passed (and this replica has had
/// `lease` to go on).
pub async fn hold_until(
    deps: &Deps,
    instance_id: &str,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    acquire_from(deps, instance_id, Some(at)).await
}

pub async fn release(deps: &Deps, instance_id: &str) -> Result<(), DbError> {
    let (id, owner) = (instance_id.to_string(), deps.config.replica.id.clone());
    deps.store
        .write("release_lease", move |c| {
            Box::pin(async move { queries::release_lease(c, &id, &owner).await })
        })
        .await
}

/// Runs `work` while holding the instance's lease, renewing it as it goes.
/// `None`: another replica holds the lease, or took it while `work` ran (then
/// `work` is dropped unfinished; steps are idempotent).
pub async fn with_lease<F: Future>(
    deps: &Deps,
    instance_id: &str,
    work: F,
) -> Result<Option<F::Output>, DbError> {
    if !acquire(deps, instance_id).await? {
        tracing::debug!(%instance_id, "lease held by another replica");
        return Ok(None);
    }
    let heartbeat = async {
        loop {
            tokio::time::sleep(deps.config.replica.lease / 3).await;
            match acquire(deps, instance_id).await {
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
