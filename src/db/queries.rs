//! Every query, written once for both backends. Reads take any connection;
//! the functions that write are called only inside the StoreActor.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::*;
use super::schema::*;
use super::{DbConnection, DbError, Reused};

type Conn = DbConnection;

pub async fn instance(conn: &mut Conn, id: &str) -> Result<Option<InstanceRow>, DbError> {
    Ok(service_instances::table
        .find(id)
        .select(InstanceRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn operation(conn: &mut Conn, id: &str) -> Result<Option<OperationRow>, DbError> {
    Ok(operations::table
        .find(id)
        .select(OperationRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// An operation and its instance, in one query.
pub async fn instance_and_operation(
    conn: &mut Conn,
    instance_id: &str,
    operation_id: &str,
) -> Result<Option<(InstanceRow, OperationRow)>, DbError> {
    Ok(operations::table
        .find(operation_id)
        .inner_join(service_instances::table)
        .filter(service_instances::id.eq(instance_id))
        .select((InstanceRow::as_select(), OperationRow::as_select()))
        .first(conn)
        .await
        .optional()?)
}

pub async fn latest_operation(
    conn: &mut Conn,
    instance_id: &str,
) -> Result<Option<OperationRow>, DbError> {
    Ok(latest_of(instance_id)
        .select(OperationRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The instance's operations, the one that counts first: the running one,
/// if any, whatever the clocks of the replicas that stamped them; else the
/// newest. (Not boxed: a boxed query misses the prepared-statement cache.)
#[diesel::dsl::auto_type(no_type_alias)]
fn latest_of<'a>(instance_id: &'a str) -> _ {
    let running: &'static str = operation_state::IN_PROGRESS;
    operations::table
        .filter(operations::instance_id.eq(instance_id))
        .order((
            operations::state.eq(running).desc(),
            operations::created_at.desc(),
            operations::id.desc(),
        ))
}

/// What `last_operation` answers with, read without the rest of the row
/// (its timestamps cost more to parse than the read itself).
pub async fn operation_status(
    conn: &mut Conn,
    instance_id: &str,
    operation_id: Option<&str>,
) -> Result<Option<OperationStatus>, DbError> {
    if let Some(id) = operation_id
        && let Some(found) = operations::table
            .find(id)
            .filter(operations::instance_id.eq(instance_id))
            .select(OperationStatus::as_select())
            .first(conn)
            .await
            .optional()?
    {
        return Ok(Some(found));
    }
    Ok(latest_of(instance_id)
        .select(OperationStatus::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Instances whose operation has not finished and that no other replica
/// drives (no lease, an expired one, or ours): the Supervisor resumes them.
pub async fn resumable_instance_ids(
    conn: &mut Conn,
    replica: &str,
    at: NaiveDateTime,
) -> Result<Vec<String>, DbError> {
    Ok(operations::table
        .inner_join(service_instances::table)
        .filter(operations::state.eq(operation_state::IN_PROGRESS))
        .filter(
            service_instances::lease_owner
                .is_null()
                .or(service_instances::lease_owner.eq(replica))
                .or(service_instances::lease_expires_at.lt(at)),
        )
        .select(operations::instance_id)
        .distinct()
        .load(conn)
        .await?)
}

/// Takes or extends the lease on an instance's pipeline. `false`: another
/// replica holds it. With `exclusive` (one broker on the database) any
/// earlier holder is a previous life of this broker.
pub async fn acquire_lease(
    conn: &mut Conn,
    instance_id: &str,
    replica: &str,
    until: NaiveDateTime,
    exclusive: bool,
) -> Result<bool, DbError> {
    let at = now();
    let target = service_instances::table.find(instance_id);
    let set = (
        service_instances::lease_owner.eq(Some(replica)),
        service_instances::lease_expires_at.eq(Some(until)),
    );
    let updated = if exclusive {
        Reused(diesel::update(target).set(set))
            .execute(conn)
            .await?
    } else {
        Reused(
            diesel::update(
                target.filter(
                    service_instances::lease_owner
                        .is_null()
                        .or(service_instances::lease_owner.eq(replica))
                        .or(service_instances::lease_expires_at.lt(at)),
                ),
            )
            .set(set),
        )
        .execute(conn)
        .await?
    };
    Ok(updated == 1)
}

/// Gives the lease back, if this replica holds it.
pub async fn release_lease(
    conn: &mut Conn,
    instance_id: &str,
    replica: &str,
) -> Result<(), DbError> {
    Reused(
        diesel::update(
            service_instances::table
                .find(instance_id)
                .filter(service_instances::lease_owner.eq(replica)),
        )
        .set((
            service_instances::lease_owner.eq(None::<String>),
            service_instances::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
        )),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a step's run, once it has ended.
pub async fn insert_step_run(conn: &mut Conn, run: &StepRunRow) -> Result<(), DbError> {
    Reused(diesel::insert_into(operation_steps::table).values(run))
        .execute(conn)
        .await?;
    Ok(())
}

/// Of `domains`, those held by a live instance other than `instance_id`.
pub async fn domains_held_by_others(
    conn: &mut Conn,
    instance_id: &str,
    domains: &[&str],
) -> Result<Vec<String>, DbError> {
    Ok(instance_domains::table
        .filter(instance_domains::domain.eq_any(domains))
        .filter(instance_domains::instance_id.ne(instance_id))
        .select(instance_domains::domain)
        .order(instance_domains::domain)
        .load(conn)
        .await?)
}

pub async fn certificate(conn: &mut Conn, id: &str) -> Result<Option<CertificateRow>, DbError> {
    Ok(certificates::table
        .find(id)
        .select(CertificateRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn challenges_of(
    conn: &mut Conn,
    certificate_id: &str,
) -> Result<Vec<ChallengeRow>, DbError> {
    Ok(challenges::table
        .filter(challenges::certificate_id.eq(certificate_id))
        .order(challenges::domain)
        .select(ChallengeRow::as_select())
        .load(conn)
        .await?)
}

pub async fn dns_records_of(
    conn: &mut Conn,
    instance_id: &str,
) -> Result<Vec<DnsRecordRow>, DbError> {
    Ok(dns_records::table
        .filter(dns_records::instance_id.eq(instance_id))
        .order(dns_records::created_at)
        .select(DnsRecordRow::as_select())
        .load(conn)
        .await?)
}

/// The instance's cloud objects, oldest first.
pub async fn cloud_resources_of(
    conn: &mut Conn,
    instance_id: &str,
) -> Result<Vec<CloudResourceRow>, DbError> {
    Ok(cloud_resources::table
        .filter(cloud_resources::instance_id.eq(instance_id))
        .order((cloud_resources::created_at, cloud_resources::id))
        .select(CloudResourceRow::as_select())
        .load(conn)
        .await?)
}

pub async fn binding(conn: &mut Conn, id: &str) -> Result<Option<BindingRow>, DbError> {
    Ok(bindings::table
        .find(id)
        .select(BindingRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn acme_account(
    conn: &mut Conn,
    directory_url: &str,
) -> Result<Option<AcmeAccountRow>, DbError> {
    Ok(acme_accounts::table
        .filter(acme_accounts::directory_url.eq(directory_url))
        .select(AcmeAccountRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

// ---- writes (StoreActor only) ----

/// Removes every row of an instance, tombstone included: used before an id
/// is provisioned again.
pub async fn purge_instance(conn: &mut Conn, id: &str) -> Result<(), DbError> {
    delete_key_material(conn, id).await?;
    diesel::delete(dns_records::table.filter(dns_records::instance_id.eq(id)))
        .execute(conn)
        .await?;
    diesel::delete(cloud_resources::table.filter(cloud_resources::instance_id.eq(id)))
        .execute(conn)
        .await?;
    let ops = operations::table
        .filter(operations::instance_id.eq(id))
        .select(operations::id);
    diesel::delete(operation_steps::table.filter(operation_steps::operation_id.eq_any(ops)))
        .execute(conn)
        .await?;
    diesel::delete(operations::table.filter(operations::instance_id.eq(id)))
        .execute(conn)
        .await?;
    release_domains(conn, id).await?;
    diesel::delete(service_instances::table.find(id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates an instance with its domain claims and first operation. Returns
/// the domains another live instance holds instead, and then writes nothing.
pub async fn create_instance(
    conn: &mut Conn,
    instance: &InstanceRow,
    domains: &[&str],
    operation: &OperationRow,
) -> Result<Result<(), Vec<String>>, DbError> {
    let taken = domains_held_by_others(conn, &instance.id, domains).await?;
    if !taken.is_empty() {
        return Ok(Err(taken));
    }
    // Only a tombstone is replaced; a live row means the caller's view was
    // stale (another replica created it), and the unique key refuses it.
    let tombstone = super::models::instance_state::DEPROVISIONED;
    if self::instance(conn, &instance.id)
        .await?
        .is_some_and(|i| i.state == tombstone)
    {
        purge_instance(conn, &instance.id).await?;
    }
    Reused(diesel::insert_into(service_instances::table).values(instance))
        .execute(conn)
        .await?;
    // A new row holds no claims yet.
    insert_claims(conn, &instance.id, domains).await?;
    insert_operation(conn, operation).await?;
    Ok(Ok(()))
}

/// Makes `domains` the instance's claims, in place of those it held.
pub async fn claim_domains(
    conn: &mut Conn,
    instance_id: &str,
    domains: &[&str],
) -> Result<(), DbError> {
    diesel::delete(instance_domains::table.filter(instance_domains::instance_id.eq(instance_id)))
        .execute(conn)
        .await?;
    insert_claims(conn, instance_id, domains).await
}

async fn insert_claims(
    conn: &mut Conn,
    instance_id: &str,
    domains: &[&str],
) -> Result<(), DbError> {
    for domain in domains {
        Reused(diesel::insert_into(instance_domains::table).values((
            instance_domains::domain.eq(*domain),
            instance_domains::instance_id.eq(instance_id),
        )))
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Adds claims for those of `domains` the instance does not hold yet.
pub async fn claim_more_domains(
    conn: &mut Conn,
    instance_id: &str,
    domains: &[&str],
) -> Result<(), DbError> {
    let held: Vec<String> = instance_domains::table
        .filter(instance_domains::instance_id.eq(instance_id))
        .select(instance_domains::domain)
        .load(conn)
        .await?;
    let new: Vec<&str> = domains
        .iter()
        .copied()
        .filter(|d| !held.iter().any(|h| h == d))
        .collect();
    insert_claims(conn, instance_id, &new).await
}

pub async fn insert_operation(conn: &mut Conn, operation: &OperationRow) -> Result<(), DbError> {
    Reused(diesel::insert_into(operations::table).values(operation))
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves an instance from one state to another, and does nothing when it is
/// no longer in `from` (a deprovision may have overtaken a provision).
pub async fn move_instance_state(
    conn: &mut Conn,
    id: &str,
    from: &str,
    state: &str,
) -> Result<(), DbError> {
    Reused(
        diesel::update(
            service_instances::table
                .find(id)
                .filter(service_instances::state.eq(from)),
        )
        .set((
            service_instances::state.eq(state),
            service_instances::updated_at.eq(now()),
        )),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Where an operation stands after a step, or a retry to come.
pub struct Progress<'a> {
    pub next_step: i32,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub description: &'a str,
    pub last_error: Option<&'a str>,
    pub at: NaiveDateTime,
}

/// Records the progress of step `from_step`, if the operation still waits
/// for it; false if it has moved on (a request ended it).
pub async fn record_progress(
    conn: &mut Conn,
    operation_id: &str,
    from_step: i32,
    progress: &Progress<'_>,
) -> Result<bool, DbError> {
    let updated = Reused(
        diesel::update(
            operations::table
                .find(operation_id)
                .filter(operations::state.eq(operation_state::IN_PROGRESS))
                .filter(operations::next_step.eq(from_step)),
        )
        .set((
            operations::next_step.eq(progress.next_step),
            operations::attempts.eq(progress.attempts),
            operations::next_attempt_at.eq(progress.next_attempt_at),
            operations::description.eq(progress.description),
            operations::last_error.eq(progress.last_error),
            operations::updated_at.eq(progress.at),
        )),
    )
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// Ends a running operation; false if it had ended already (then it
/// stays as it ended).
pub async fn finish_operation(
    conn: &mut Conn,
    operation_id: &str,
    state: &str,
    description: &str,
) -> Result<bool, DbError> {
    let now = now();
    let ended = Reused(
        diesel::update(
            operations::table
                .find(operation_id)
                .filter(operations::state.eq(operation_state::IN_PROGRESS)),
        )
        .set((
            operations::state.eq(state),
            operations::description.eq(description),
            operations::updated_at.eq(now),
            operations::finished_at.eq(Some(now)),
        )),
    )
    .execute(conn)
    .await?;
    Ok(ended == 1)
}

pub async fn release_domains(conn: &mut Conn, instance_id: &str) -> Result<(), DbError> {
    diesel::delete(instance_domains::table.filter(instance_domains::instance_id.eq(instance_id)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_binding(conn: &mut Conn, binding: &BindingRow) -> Result<(), DbError> {
    Reused(diesel::insert_into(bindings::table).values(binding))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_binding(conn: &mut Conn, id: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(bindings::table.find(id))
        .execute(conn)
        .await?)
}

/// Starts a new operation on an existing instance, moving it to `state`.
pub async fn start_operation(
    conn: &mut Conn,
    instance_id: &str,
    state: &str,
    operation: &OperationRow,
) -> Result<(), DbError> {
    Reused(
        diesel::update(service_instances::table.find(instance_id)).set((
            service_instances::state.eq(state),
            service_instances::updated_at.eq(now()),
        )),
    )
    .execute(conn)
    .await?;
    insert_operation(conn, operation).await
}

pub async fn certificate_of_operation(
    conn: &mut Conn,
    operation_id: &str,
) -> Result<Option<CertificateRow>, DbError> {
    Ok(certificates::table
        .filter(certificates::operation_id.eq(operation_id))
        .select(CertificateRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A new certificate order: its row, its challenges, and the TXT records
/// they need, listed before any is written so that clean-up finds them
/// whatever happens next.
pub async fn insert_certificate(
    conn: &mut Conn,
    certificate: &CertificateRow,
    challenges: &[ChallengeRow],
    txt_records: &[DnsRecordRow],
) -> Result<(), DbError> {
    Reused(diesel::insert_into(certificates::table).values(certificate))
        .execute(conn)
        .await?;
    for challenge in challenges {
        Reused(diesel::insert_into(challenges::table).values(challenge))
            .execute(conn)
            .await?;
    }
    for record in txt_records {
        Reused(diesel::insert_into(dns_records::table).values(record))
            .execute(conn)
            .await?;
    }
    Ok(())
}

pub async fn mark_challenges_answered(conn: &mut Conn, ids: &[String]) -> Result<(), DbError> {
    diesel::update(challenges::table.filter(challenges::id.eq_any(ids)))
        .set(challenges::answered_at.eq(Some(now())))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_dns_records(conn: &mut Conn, ids: &[String]) -> Result<(), DbError> {
    diesel::delete(dns_records::table.filter(dns_records::id.eq_any(ids)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_cloud_resource(
    conn: &mut Conn,
    resource: &CloudResourceRow,
) -> Result<(), DbError> {
    Reused(diesel::insert_into(cloud_resources::table).values(resource))
        .execute(conn)
        .await?;
    Ok(())
}

/// Notes what AWS calls an object once it exists, and what else we learnt.
pub async fn cloud_resource_made(
    conn: &mut Conn,
    id: &str,
    arn: &str,
    details: &str,
) -> Result<(), DbError> {
    Reused(diesel::update(cloud_resources::table.find(id)).set((
        cloud_resources::arn.eq(Some(arn)),
        cloud_resources::details.eq(details),
    )))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_cloud_resource(conn: &mut Conn, id: &str) -> Result<(), DbError> {
    diesel::delete(cloud_resources::table.find(id))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn store_issued(
    conn: &mut Conn,
    certificate_id: &str,
    leaf_pem: &str,
    chain_pem: &str,
    expires_at: NaiveDateTime,
) -> Result<(), DbError> {
    Reused(
        diesel::update(certificates::table.find(certificate_id)).set((
            certificates::leaf_pem.eq(Some(leaf_pem)),
            certificates::chain_pem.eq(Some(chain_pem)),
            certificates::expires_at.eq(Some(expires_at)),
            certificates::issued_at.eq(Some(now())),
        )),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes a certificate the instance's current one; with `parameters`, the
/// instance also takes the domains and parameters of an update.
pub async fn activate_certificate(
    conn: &mut Conn,
    instance_id: &str,
    certificate_id: &str,
    update: Option<(&str, &[&str], &str)>,
) -> Result<(), DbError> {
    Reused(
        diesel::update(service_instances::table.find(instance_id)).set((
            service_instances::current_certificate_id.eq(Some(certificate_id)),
            service_instances::updated_at.eq(now()),
        )),
    )
    .execute(conn)
    .await?;
    if let Some((domains_json, domains, parameters)) = update {
        Reused(
            diesel::update(service_instances::table.find(instance_id)).set((
                service_instances::domains.eq(domains_json),
                service_instances::parameters.eq(parameters),
            )),
        )
        .execute(conn)
        .await?;
        claim_domains(conn, instance_id, domains).await?;
    }
    Ok(())
}

/// Forgets every certificate, key, challenge and binding of an instance.
pub async fn delete_key_material(conn: &mut Conn, instance_id: &str) -> Result<(), DbError> {
    Reused(
        diesel::update(service_instances::table.find(instance_id))
            .set(service_instances::current_certificate_id.eq(None::<String>)),
    )
    .execute(conn)
    .await?;
    let certs = certificates::table
        .filter(certificates::instance_id.eq(instance_id))
        .select(certificates::id);
    diesel::delete(challenges::table.filter(challenges::certificate_id.eq_any(certs)))
        .execute(conn)
        .await?;
    diesel::delete(bindings::table.filter(bindings::instance_id.eq(instance_id)))
        .execute(conn)
        .await?;
    diesel::delete(certificates::table.filter(certificates::instance_id.eq(instance_id)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_acme_account(conn: &mut Conn, account: &AcmeAccountRow) -> Result<(), DbError> {
    Reused(diesel::insert_into(acme_accounts::table).values(account))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_acme_account(conn: &mut Conn, directory_url: &str) -> Result<(), DbError> {
    diesel::delete(acme_accounts::table.filter(acme_accounts::directory_url.eq(directory_url)))
        .execute(conn)
        .await?;
    Ok(())
}

/// A certificate that may be due: `(instance id, certificate id, issued,
/// expires)`.
pub type RenewalCandidate = (String, String, Option<NaiveDateTime>, Option<NaiveDateTime>);

/// Provisioned instances with no operation running whose current
/// certificate expires before `horizon`, soonest expiry first.
pub async fn renewal_candidates(
    conn: &mut Conn,
    horizon: NaiveDateTime,
) -> Result<Vec<RenewalCandidate>, DbError> {
    let running = operations::table
        .filter(operations::instance_id.eq(service_instances::id))
        .filter(operations::state.eq(operation_state::IN_PROGRESS));
    Ok(service_instances::table
        .inner_join(
            certificates::table
                .on(service_instances::current_certificate_id.eq(certificates::id.nullable())),
        )
        .filter(service_instances::state.eq(instance_state::PROVISIONED))
        .filter(certificates::expires_at.lt(horizon))
        .filter(diesel::dsl::not(diesel::dsl::exists(running)))
        .order(certificates::expires_at.asc())
        .select((
            service_instances::id,
            certificates::id,
            certificates::issued_at,
            certificates::expires_at,
        ))
        .load(conn)
        .await?)
}

pub async fn count_running(conn: &mut Conn, kind: &str) -> Result<i64, DbError> {
    Ok(operations::table
        .filter(operations::kind.eq(kind))
        .filter(operations::state.eq(operation_state::IN_PROGRESS))
        .count()
        .get_result(conn)
        .await?)
}
