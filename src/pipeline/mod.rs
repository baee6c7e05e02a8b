//! Pipelines are data: for each (plan, action) an ordered table of named,
//! idempotent steps. The operation row records the next step, attempts, the
//! next attempt time and the last error, so a restart resumes exactly there.

mod certificate;
mod cleanup;
mod edge;
mod lease;

pub use lease::on_new_instance as lease_new_instance;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::db::models::{
    InstanceRow, OperationRow, StepRunRow, instance_state, now, operation_state,
};
use crate::db::{DbConnection, DbError, queries};
use crate::deps::Deps;
use crate::domain::{Action, Plan};
use lease::LeaseTerms;

/// What a step needs: the broker's parts and the rows it works on.
#[derive(Clone)]
pub struct StepContext {
    pub deps: Deps,
    pub instance: InstanceRow,
    pub operation: OperationRow,
}

/// A write a step hands back, to be committed with the step's progress.
pub type Record =
    Box<dyn for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<(), DbError>> + Send>;

pub enum StepOutcome {
    /// Go on to the next step now.
    Done,
    /// Go on to the next step now, with what this step learned (an order,
    /// an issued certificate) written in the transaction that records its
    /// progress: the two cannot part, and it costs no write of its own.
    DoneRecording(Record),
    /// Go on to the next step, but not before this long; with what this
    /// step learned, if anything, written as `DoneRecording` writes it.
    DoneNotBefore(Duration, Option<Record>),
    /// Run this same step again after this long (polling; not a failure).
    Poll(Duration),
}

impl StepOutcome {
    /// Go on to the next step now, with `record`, if there is one, written
    /// with the step's progress.
    pub fn recording(record: Option<Record>) -> StepOutcome {
        match record {
            Some(record) => StepOutcome::DoneRecording(record),
            None => StepOutcome::Done,
        }
    }
}

#[derive(Debug)]
pub enum StepError {
    /// Worth another attempt after a back-off.
    Retry(String),
    /// The peer asked us to wait this long (a CA's rate limit): no attempt
    /// is spent, and nothing is asked of it before then.
    RetryAfter(Duration, String),
    /// The operation cannot succeed; the sentence tells the user why.
    Fail(String),
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        StepError::Retry(e.to_string())
    }
}

pub type StepResult = Result<StepOutcome, StepError>;
pub type StepFn = fn(StepContext) -> BoxFuture<'static, StepResult>;

pub struct Step {
    pub name: &'static str,
    /// What `last_operation` shows while this step runs.
    pub description: &'static str,
    pub run: StepFn,
    pub max_attempts: i32,
}

/// The request an operation was started with, stored in `operations.request`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OperationRequest {
    /// The domains this operation orders a certificate for.
    #[serde(default)]
    pub domains: Vec<String>,
    /// For an update: the parameters the instance will have afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// An update of settings only: the current certificate stays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_certificate: bool,
}

impl OperationRequest {
    pub fn parse(op: &OperationRow) -> OperationRequest {
        serde_json::from_str(&op.request).unwrap_or_default()
    }
}

pub fn steps(plan: Plan, action: Action, keep_certificate: bool) -> &'static [Step] {
    match (plan, action) {
        (Plan::DomainWithCdn, Action::Update) if keep_certificate => edge::CDN_UPDATE_SETTINGS,
        (Plan::Certificate, Action::Provision | Action::Update | Action::Renew) => {
            certificate::ISSUE_AND_ACTIVATE
        }
        (Plan::Certificate, Action::Deprovision) => cleanup::DEPROVISION,
        (Plan::Domain, Action::Deprovision) => edge::ALB_DEPROVISION,
        (Plan::Domain, Action::Provision | Action::Update | Action::Renew) => {
            edge::ALB_ISSUE_AND_ACTIVATE
        }
        (Plan::DomainWithCdn, Action::Deprovision) => edge::CDN_DEPROVISION,
        (Plan::DomainWithCdn, Action::Provision | Action::Update | Action::Renew) => {
            edge::CDN_ISSUE_AND_ACTIVATE
        }
    }
}

/// How long until the operation's next step may run.
pub fn wait_before_next_step(op: &OperationRow) -> Duration {
    (op.next_attempt_at - now()).to_std().unwrap_or_default()
}

pub fn first_description(plan: Plan, action: Action, keep_certificate: bool) -> &'static str {
    steps(plan, action, keep_certificate)
        .first()
        .map_or("Finishing", |s| s.description)
}

/// A step that hangs (a peer that never answers) is abandoned after this
/// long and tried again; steps are idempotent, so that is safe.
const STEP_DEADLINE: Duration = Duration::from_secs(300);
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

fn backoff(attempts: i32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.clamp(0, 16) as u32);
    (RETRY_BASE * factor).min(RETRY_MAX)
}

fn plan_of(instance: &InstanceRow) -> Plan {
    crate::catalog::plan_by_id(&instance.plan_id)
        .map(|p| p.plan)
        .unwrap_or(Plan::Certificate)
}

/// What one call of `advance` came to.
pub enum Advanced {
    /// The rows as they now stand.
    Progressed(Box<(InstanceRow, OperationRow)>),
    /// Another replica drives this instance now.
    NotOurs,
}

/// Where the operation stood when a step was about to begin.
enum Begun {
    /// Another replica holds the lease.
    NotOurs,
    /// Another replica or a request ended or advanced the operation while
    /// this actor waited: the step is not run.
    MovedOn(Box<OperationRow>),
    /// The lease is ours and the rows are as stored.
    Ready(Box<(InstanceRow, OperationRow)>),
}

impl Begun {
    /// Ready if the stored operation still waits for step `next_step`.
    fn unless_moved_on(instance: InstanceRow, op: OperationRow, next_step: i32) -> Begun {
        if !op.in_progress() || op.next_step != next_step {
            return Begun::MovedOn(Box::new(op));
        }
        Begun::Ready(Box::new((instance, op)))
    }
}

/// How a step's run was recorded.
enum Ended {
    /// The lease is held through the wait the step asked for, or given up
    /// with the operation's end. False: lost, and the replica holding it
    /// records.
    Recorded(bool),
    /// The write that recorded the step found where the next one begins:
    /// at once (no wait was asked), or not at all (the operation moved on).
    Next(Begun),
    /// Recorded with what the step learned, which may have changed the
    /// instance: this step begins at once, with the rows read again.
    NextAfterRecord(i32),
}

/// Runs the operation's next step, under the instance's lease, and records
/// the result; while a step is done with no wait asked, the next follows at
/// once (each recorded before the next starts). Returns the rows as they
/// now stand. The caller waits for `next_attempt_at`.
pub async fn advance(
    deps: Deps,
    instance: InstanceRow,
    op: OperationRow,
) -> Result<Advanced, DbError> {
    let _running = deps.lifecycle.step_started();
    let instance_id = instance.id.clone();
    let op_id = op.id.clone();
    let begun = begin_step(&deps, &instance_id, &op).await?;
    // None: the lease was lost while a step ran.
    let still_ours = lease::keep_while(&deps, &instance_id, run_steps(&deps, begun))
        .await?
        .transpose()?
        .unwrap_or(false);
    if !still_ours {
        return Ok(Advanced::NotOurs);
    }
    let (instance, op) = reload(&deps, &instance_id, &op_id).await?;
    Ok(Advanced::Progressed(Box::new((instance, op))))
}

/// Runs steps from `begun` on while each begins the next; false if the
/// instance is another replica's.
async fn run_steps(deps: &Deps, mut begun: Begun) -> Result<bool, DbError> {
    loop {
        let (instance, op) = match begun {
            Begun::NotOurs => {
                tracing::debug!("lease held by another replica");
                return Ok(false);
            }
            Begun::MovedOn(op) => {
                tracing::debug!(operation_id = %op.id, state = %op.state, next_step = op.next_step, "operation moved on; step skipped");
                if op.in_progress() {
                    return lease::hold_until(deps, &op.instance_id, op.next_attempt_at).await;
                }
                // Finished, or overtaken by an operation another replica
                // started: either way this replica is done with the instance.
                lease::release(deps, &op.instance_id).await?;
                return Ok(true);
            }
            Begun::Ready(rows) => *rows,
        };
        let (instance_id, op_id) = (instance.id.clone(), op.id.clone());
        match run_step(deps, instance, op).await? {
            Ended::Recorded(held) => return Ok(held),
            Ended::Next(next) => begun = next,
            // Read outside the write: the writer's time is everyone's.
            Ended::NextAfterRecord(next_step) => {
                let (instance, op) = reload(deps, &instance_id, &op_id).await?;
                begun = Begun::unless_moved_on(instance, op, next_step);
            }
        }
    }
}

fn action_of(op: &OperationRow) -> Action {
    Action::parse(&op.kind).unwrap_or(Action::Provision)
}

fn table_of(instance: &InstanceRow, op: &OperationRow) -> &'static [Step] {
    let keep_certificate = OperationRequest::parse(op).keep_certificate;
    steps(plan_of(instance), action_of(op), keep_certificate)
}

/// Makes sure the lease is ours and the stored operation still waits for
/// its next step. After a wait a read is enough, as the write that began
/// the wait took the lease through it; otherwise one write takes it.
async fn begin_step(deps: &Deps, instance_id: &str, op: &OperationRow) -> Result<Begun, DbError> {
    let (instance, stored) = reload(deps, instance_id, &op.id).await?;
    if lease::held(deps, &instance, now()) {
        return Ok(Begun::unless_moved_on(instance, stored, op.next_step));
    }
    let terms = LeaseTerms::new(deps, None);
    let (id, op_id, next_step) = (instance_id.to_string(), op.id.clone(), op.next_step);
    deps.store
        .write("begin_step", move |c| {
            Box::pin(async move {
                if !terms.take(c, &id).await? {
                    return Ok(Begun::NotOurs);
                }
                let (instance, stored) = load_rows(c, &id, &op_id).await?;
                Ok(Begun::unless_moved_on(instance, stored, next_step))
            })
        })
        .await
}

/// Runs the step and records how it went in one write: with the lease held
/// through the wait the step asks for, given up when the operation ends, or
/// with the next step begun when there is no wait.
async fn run_step(deps: &Deps, instance: InstanceRow, op: OperationRow) -> Result<Ended, DbError> {
    let action = action_of(&op);
    let table = table_of(&instance, &op);
    let index = op.next_step.max(0) as usize;
    let Some(step) = table.get(index) else {
        finish(deps, &instance, &op, action, Ok(()), None).await?;
        return Ok(Ended::Recorded(true));
    };
    tracing::debug!(operation_id = %op.id, next_step = op.next_step, "running step");
    let span = tracing::info_span!("step", instance_id = %instance.id, operation_id = %op.id, step = step.name);
    let ctx = StepContext {
        deps: deps.clone(),
        instance: instance.clone(),
        operation: op.clone(),
    };
    let started_at = now();
    let run = tracing::Instrument::instrument((step.run)(ctx.clone()), span.clone());
    let result = tokio::time::timeout(STEP_DEADLINE, run)
        .await
        .unwrap_or_else(|_| {
            Err(StepError::Retry(format!(
                "the step did not finish within {} seconds",
                STEP_DEADLINE.as_secs()
            )))
        });
    let run = StepRunRow {
        id: crate::db::models::new_id(),
        operation_id: op.id.clone(),
        step: step.name.to_string(),
        replica: deps.config.replica.id.clone(),
        started_at,
        finished_at: Some(now()),
    };
    let mut record = None;
    let (next_step, attempts, delay, description, error, failed) = match result {
        Ok(StepOutcome::Done) => (index + 1, 0, Duration::ZERO, None, None, None),
        Ok(StepOutcome::DoneRecording(r)) => {
            record = Some(r);
            (index + 1, 0, Duration::ZERO, None, None, None)
        }
        // The wait is this step's doing: keep saying so until it is over.
        Ok(StepOutcome::DoneNotBefore(d, r)) => {
            record = r;
            (index + 1, 0, d, Some(step.description), None, None)
        }
        Ok(StepOutcome::Poll(d)) => (index, op.attempts, d, Some(step.description), None, None),
        Err(StepError::RetryAfter(wait, msg)) => {
            tracing::warn!(parent: &span, error = %msg, wait_seconds = wait.as_secs(), "asked to wait; will retry then");
            (
                index,
                op.attempts,
                wait,
                Some(step.description),
                Some(msg),
                None,
            )
        }
        Err(StepError::Retry(msg)) if op.attempts + 1 < step.max_attempts => {
            tracing::warn!(parent: &span, error = %msg, attempt = op.attempts + 1, "step failed; will retry");
            let delay = backoff(op.attempts);
            (
                index,
                op.attempts + 1,
                delay,
                Some(step.description),
                Some(msg),
                None,
            )
        }
        Err(StepError::Retry(msg)) | Err(StepError::Fail(msg)) => {
            tracing::warn!(parent: &span, error = %msg, "step failed; operation fails");
            (
                index,
                op.attempts + 1,
                Duration::ZERO,
                None,
                Some(msg.clone()),
                Some(msg),
            )
        }
    };
    if let Some(reason) = failed {
        // Best effort: what stays is still listed, and a deprovision
        // removes it.
        let mut forget = None;
        if action != Action::Deprovision {
            match certificate::remove_challenge_records(&ctx).await {
                Ok(removed) => forget = removed,
                Err(e) => {
                    tracing::warn!(parent: &span, error = ?e, "could not remove the challenge records of a failed operation")
                }
            }
        }
        if matches!(action, Action::Update | Action::Renew) {
            // An edge instance goes on serving what it served.
            if let Err(e) = edge::restore_current(&ctx).await {
                tracing::warn!(parent: &span, error = ?e, "could not restore the distribution or ALIAS records after a failed operation");
            }
        }
        let end = RunEnd {
            run,
            record: forget,
        };
        finish(deps, &instance, &op, action, Err(reason), Some(end)).await?;
        return Ok(Ended::Recorded(true));
    }
    if next_step >= table.len() && delay.is_zero() {
        // That was the last step: end the operation in this same write.
        let end = RunEnd { run, record };
        finish(deps, &instance, &op, action, Ok(()), Some(end)).await?;
        return Ok(Ended::Recorded(true));
    }
    // No wait: the next step begins in this write (unless shutting down).
    let go_on = delay.is_zero() && next_step > index && !deps.lifecycle.draining();
    let description = description
        .or_else(|| table.get(next_step).map(|s| s.description))
        .unwrap_or("Finishing")
        .to_string();
    let at = now() + chrono::Duration::from_std(delay).unwrap_or_default();
    // Other replicas leave the instance alone through the wait: the lease
    // is taken through it, unless already held that long.
    let terms = (!lease::held(deps, &instance, at)).then(|| LeaseTerms::new(deps, Some(at)));
    deps.store
        .write("end_step", move |c| {
            Box::pin(async move {
                if let Some(terms) = &terms
                    && !terms.take(c, &instance.id).await?
                {
                    return Ok(Ended::Recorded(false));
                }
                queries::insert_step_run(c, &run).await?;
                let progress = queries::Progress {
                    next_step: next_step as i32,
                    attempts,
                    next_attempt_at: at,
                    description: &description,
                    last_error: error.as_deref(),
                    at: now(),
                };
                if !queries::record_progress(c, &op.id, index as i32, &progress).await? {
                    // What the step learned belongs to an operation that is over.
                    let op = queries::operation(c, &op.id)
                        .await?
                        .ok_or_else(|| vanished(&instance.id, &op.id))?;
                    return Ok(Ended::Next(Begun::MovedOn(Box::new(op))));
                }
                let updated_at = progress.at;
                let recorded = record.is_some();
                if let Some(record) = record {
                    record(c).await?;
                }
                if !go_on {
                    return Ok(Ended::Recorded(true));
                }
                // A record may have changed the instance (a new certificate
                // in place): the next step reads the rows again.
                if recorded {
                    return Ok(Ended::NextAfterRecord(next_step as i32));
                }
                // Otherwise the rows as this write leaves them are the next
                // step's context.
                let instance = match &terms {
                    Some(terms) => terms.taken_on(instance),
                    None => instance,
                };
                let op = OperationRow {
                    next_step: next_step as i32,
                    attempts,
                    next_attempt_at: at,
                    description,
                    last_error: error,
                    updated_at,
                    ..op
                };
                Ok(Ended::Next(Begun::Ready(Box::new((instance, op)))))
            })
        })
        .await
}

/// The instance and the operation as stored; both must exist.
async fn load_rows(
    c: &mut DbConnection,
    instance_id: &str,
    op_id: &str,
) -> Result<(InstanceRow, OperationRow), DbError> {
    queries::instance_and_operation(c, instance_id, op_id)
        .await?
        .ok_or_else(|| vanished(instance_id, op_id))
}

fn vanished(instance_id: &str, op_id: &str) -> DbError {
    DbError::Corrupt(format!(
        "instance {instance_id} or operation {op_id} vanished"
    ))
}

async fn reload(
    deps: &Deps,
    instance_id: &str,
    op_id: &str,
) -> Result<(InstanceRow, OperationRow), DbError> {
    let (instance_id, op_id) = (instance_id.to_string(), op_id.to_string());
    deps.store
        .read(move |c| Box::pin(async move { load_rows(c, &instance_id, &op_id).await }))
        .await
}

/// The end of a step's run, as `finish` writes it.
struct RunEnd {
    run: StepRunRow,
    record: Option<Record>,
}

/// Ends an operation, the step's run and the lease, and moves the instance
/// to where that leaves it, in one write.
async fn finish(
    deps: &Deps,
    instance: &InstanceRow,
    op: &OperationRow,
    action: Action,
    outcome: Result<(), String>,
    end: Option<RunEnd>,
) -> Result<(), DbError> {
    let (op_state, description) = match &outcome {
        Ok(()) => (
            operation_state::SUCCEEDED,
            success_description(plan_of(instance), action, &deps.config.dns.root_domain),
        ),
        Err(reason) => (operation_state::FAILED, failure_description(action, reason)),
    };
    let (from, to) = match (action, outcome.is_ok()) {
        (Action::Provision, true) => (instance_state::PROVISIONING, instance_state::PROVISIONED),
        (Action::Provision, false) => (instance_state::PROVISIONING, instance_state::FAILED),
        (Action::Deprovision, true) => (
            instance_state::DEPROVISIONING,
            instance_state::DEPROVISIONED,
        ),
        (Action::Deprovision, false) => (
            instance_state::DEPROVISIONING,
            instance_state::DEPROVISIONING,
        ),
        (Action::Update | Action::Renew, _) => {
            (instance_state::PROVISIONED, instance_state::PROVISIONED)
        }
    };
    tracing::info!(instance_id = %instance.id, operation_id = %op.id, state = op_state, %description, "operation finished");
    let (instance_id, op_id) = (instance.id.clone(), op.id.clone());
    let release = action == Action::Deprovision && outcome.is_ok();
    let terms = LeaseTerms::new(deps, None);
    // A failed update gives back the domains it had claimed.
    let keep_domains = (action == Action::Update && outcome.is_err())
        .then(|| crate::domain::DomainList::from_stored(&instance.domains))
        .flatten()
        .map(|d| d.names().iter().map(|n| n.to_string()).collect::<Vec<_>>());
    deps.store
        .write("finish_operation", move |c| {
            Box::pin(async move {
                let (run, record) = end.map_or((None, None), |e| (Some(e.run), e.record));
                if let Some(run) = run {
                    queries::insert_step_run(c, &run).await?;
                }
                // Ended meanwhile (a request overtook it): it stays as it ended.
                if queries::finish_operation(c, &op_id, op_state, &description).await? {
                    if let Some(record) = record {
                        record(c).await?;
                    }
                    queries::move_instance_state(c, &instance_id, from, to).await?;
                    if release {
                        queries::release_domains(c, &instance_id).await?;
                    }
                    if let Some(domains) = &keep_domains {
                        let names: Vec<&str> = domains.iter().map(String::as_str).collect();
                        queries::claim_domains(c, &instance_id, &names).await?;
                    }
                }
                terms.release(c, &instance_id).await
            })
        })
        .await
}

fn success_description(plan: Plan, action: Action, root: &crate::domain::DomainName) -> String {
    let served_by = match (plan, action) {
        (Plan::Domain, Action::Provision) => "the load balancer serves it",
        (Plan::DomainWithCdn, Action::Provision) => "the CloudFront distribution is deployed",
        (_, action) => return success_sentence(action).to_string(),
    };
    format!(
        "The certificate has been issued and {served_by}; traffic arrives once each \
         domain has a CNAME to <domain>.{root}."
    )
}

fn success_sentence(action: Action) -> &'static str {
    match action {
        Action::Provision => "The certificate has been issued and is ready.",
        Action::Update => "The instance has been updated.",
        Action::Renew => "The certificate has been renewed.",
        Action::Deprovision => "The instance and everything the broker made for it are deleted.",
    }
}

fn failure_description(action: Action, reason: &str) -> String {
    let what = match action {
        Action::Provision => "Provisioning failed",
        Action::Update => "The update failed; the instance keeps its previous certificate",
        Action::Renew => "Renewal failed; the current certificate stays in place",
        Action::Deprovision => "Deprovisioning failed; delete the instance again to retry",
    };
    format!("{what}: {reason}")
}
