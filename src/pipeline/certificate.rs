//! The certificate steps every plan shares: account, key and order, TXT
//! records, DNS wait, challenges, validation, finalize, clean-up, install.

use std::time::Duration;

use futures_util::FutureExt;

use super::{OperationRequest, Record, Step, StepContext, StepError, StepOutcome, StepResult};
use crate::acme::{AcmeError, Issuance, OrderState};
use crate::db::models::{CertificateRow, ChallengeRow, DnsRecordRow, new_id, now};
use crate::db::queries;
use crate::domain::{DomainList, DomainName};

const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The first look at an answered or finalized order waits this long instead
/// of asking at once: a CA often validates or issues within it, and a look
/// that comes too soon costs a whole POLL_INTERVAL. (Polling sooner and more
/// often only adds requests to the CA.)
const FIRST_CHECK: Duration = Duration::from_millis(250);

pub const ENSURE_ACME_ACCOUNT: Step = Step {
    name: "ensure_acme_account",
    description: "Registering with the ACME server",
    run: |ctx| ensure_account(ctx).boxed(),
    max_attempts: 6,
};

pub const CREATE_ORDER: Step = Step {
    name: "create_order",
    description: "Requesting the certificate from the ACME server",
    run: |ctx| create_order(ctx).boxed(),
    max_attempts: 6,
};

pub const WRITE_TXT_RECORDS: Step = Step {
    name: "write_txt_records",
    description: "Writing the DNS challenge records",
    run: |ctx| write_txt_records(ctx).boxed(),
    max_attempts: 6,
};

pub const WAIT_FOR_DNS: Step = Step {
    name: "wait_for_dns",
    description: "Waiting for DNS changes to propagate",
    run: |ctx| wait_for_dns(ctx).boxed(),
    max_attempts: 1,
};

pub const ANSWER_CHALLENGES: Step = Step {
    name: "answer_challenges",
    description: "Asking the ACME server to validate the domains",
    run: |ctx| answer_challenges(ctx).boxed(),
    max_attempts: 6,
};

pub const AWAIT_VALIDATION: Step = Step {
    name: "await_validation",
    description: "Waiting for the ACME server to validate the domains",
    run: |ctx| await_validation(ctx).boxed(),
    max_attempts: 6,
};

pub const FINALIZE_ORDER: Step = Step {
    name: "finalize_order",
    description: "Finalizing the certificate",
    run: |ctx| finalize_order(ctx).boxed(),
    max_attempts: 6,
};

pub const INSTALL_CERTIFICATE: Step = Step {
    name: "install_certificate",
    description: "Installing the new certificate",
    run: |ctx| install_certificate(ctx).boxed(),
    max_attempts: 6,
};

pub const REMOVE_TXT_RECORDS: Step = Step {
    name: "remove_txt_records",
    description: "Removing the DNS challenge records",
    run: |ctx| remove_txt_records(ctx).boxed(),
    max_attempts: 6,
};

/// A step table that starts by ordering a new certificate: account, key
/// and order, TXT records, DNS wait, challenges, validation, finalize; then
/// the plan's own steps.
macro_rules! after_new_certificate {
    ($($step:expr),* $(,)?) => {
        &[
            $crate::pipeline::certificate::ENSURE_ACME_ACCOUNT,
            $crate::pipeline::certificate::CREATE_ORDER,
            $crate::pipeline::certificate::WRITE_TXT_RECORDS,
            $crate::pipeline::certificate::WAIT_FOR_DNS,
            $crate::pipeline::certificate::ANSWER_CHALLENGES,
            $crate::pipeline::certificate::AWAIT_VALIDATION,
            $crate::pipeline::certificate::FINALIZE_ORDER,
            $($step),*
        ]
    };
}
pub(super) use after_new_certificate;

pub const ISSUE_AND_ACTIVATE: &[Step] =
    after_new_certificate![INSTALL_CERTIFICATE, REMOVE_TXT_RECORDS];

impl From<AcmeError> for StepError {
    fn from(e: AcmeError) -> Self {
        match &e {
            AcmeError::RateLimited(detail) => {
                StepError::RetryAfter(crate::acme::rate_limit_wait(detail, now()), e.to_string())
            }
            e if e.is_permanent() => StepError::Fail(e.to_string()),
            e => StepError::Retry(e.to_string()),
        }
    }
}

async fn ensure_account(ctx: StepContext) -> StepResult {
    ctx.deps.acme.account().await?;
    Ok(StepOutcome::Done)
}

/// The certificate this operation orders, if `create_order` made it.
async fn this_certificate_if_any(ctx: &StepContext) -> Result<Option<CertificateRow>, StepError> {
    let op_id = ctx.operation.id.clone();
    Ok(ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::certificate_of_operation(c, &op_id).await }))
        .await?)
}

pub(super) async fn this_certificate(ctx: &StepContext) -> Result<CertificateRow, StepError> {
    this_certificate_if_any(ctx)
        .await?
        .ok_or_else(|| StepError::Fail("the certificate order of this operation is missing".into()))
}

/// The certificate this operation puts in place: its own, or for an
/// update of settings only, the current one.
pub(super) async fn certificate_in_use(ctx: &StepContext) -> Result<CertificateRow, StepError> {
    if !OperationRequest::parse(&ctx.operation).keep_certificate {
        return this_certificate(ctx).await;
    }
    let id = ctx
        .instance
        .current_certificate_id
        .clone()
        .ok_or_else(|| StepError::Fail("the instance has no certificate to keep".into()))?;
    ctx.deps
        .store
        .read(move |c| Box::pin(async move { queries::certificate(c, &id).await }))
        .await?
        .ok_or_else(|| StepError::Fail("the instance's certificate is missing".into()))
}

async fn challenges(
    ctx: &StepContext,
    certificate_id: &str,
) -> Result<Vec<ChallengeRow>, StepError> {
    let id = certificate_id.to_string();
    Ok(ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::challenges_of(c, &id).await }))
        .await?)
}

/// A new key and order. A crash before the row is written makes a second
/// order on resume; the first simply expires at the CA.
async fn create_order(ctx: StepContext) -> StepResult {
    if this_certificate_if_any(&ctx).await?.is_some() {
        return Ok(StepOutcome::Done);
    }
    let request = OperationRequest::parse(&ctx.operation);
    let domains = DomainList::new(
        request
            .domains
            .iter()
            .filter_map(|d| DomainName::parse(d).ok())
            .collect(),
    );
    if domains.is_empty() {
        return Err(StepError::Fail("the operation names no domains".into()));
    }
    let key_pem = crate::acme::new_private_key_pem();
    let order = ctx.deps.acme.new_order(&domains).await?;
    let certificate = CertificateRow {
        id: new_id(),
        instance_id: ctx.instance.id.clone(),
        operation_id: ctx.operation.id.clone(),
        domains: domains.to_json(),
        private_key_encrypted: Some(ctx.deps.cipher.encrypt(key_pem.as_bytes())),
        order_url: Some(order.url.clone()),
        leaf_pem: None,
        chain_pem: None,
        expires_at: None,
        created_at: now(),
        issued_at: None,
    };
    let root = &ctx.deps.config.dns.root_domain;
    let rows: Vec<ChallengeRow> = order
        .challenges
        .iter()
        .map(|ch| ChallengeRow {
            id: new_id(),
            certificate_id: certificate.id.clone(),
            domain: ch.domain.to_string(),
            authorization_url: ch.authorization_url.clone(),
            challenge_url: ch.challenge_url.clone(),
            txt_name: ch.domain.delegated_challenge_name(root),
            txt_value: ch.txt_value.clone(),
            answered_at: None,
            created_at: now(),
        })
        .collect();
    let txt_records: Vec<DnsRecordRow> = rows
        .iter()
        .map(|ch| DnsRecordRow {
            id: new_id(),
            instance_id: ctx.instance.id.clone(),
            name: ch.txt_name.clone(),
            record_type: "TXT".into(),
            value: ch.txt_value.clone(),
            created_at: now(),
        })
        .collect();
    tracing::info!(order = %order.url, domains = ?domains.names(), challenges = rows.len(), "order created");
    Ok(StepOutcome::DoneRecording(Box::new(move |c| {
        Box::pin(
            async move { queries::insert_certificate(c, &certificate, &rows, &txt_records).await },
        )
    })))
}

/// The TXT records were listed in `dns_records` with the order, before
/// any is written here, so that clean-up finds them whatever happens next.
/// Writing one again is harmless.
async fn write_txt_records(ctx: StepContext) -> StepResult {
    let cert = this_certificate(&ctx).await?;
    for ch in challenges(&ctx, &cert.id).await? {
        ctx.deps
            .dns
            .add_txt(&ch.txt_name, &ch.txt_value)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
    }
    Ok(StepOutcome::Done)
}

async fn wait_for_dns(ctx: StepContext) -> StepResult {
    Ok(StepOutcome::DoneNotBefore(
        ctx.deps.config.dns.propagation_sleep,
        None,
    ))
}

/// Answering a challenge again is harmless (`answer` leaves one that is
/// no longer pending alone), so the answers are recorded with the step.
async fn answer_challenges(ctx: StepContext) -> StepResult {
    let cert = this_certificate(&ctx).await?;
    let mut answered = Vec::new();
    for ch in challenges(&ctx, &cert.id).await? {
        if ch.answered_at.is_some() {
            continue;
        }
        ctx.deps
            .acme
            .answer(
                cert.order_url.as_deref().unwrap_or_default(),
                &ch.challenge_url,
            )
            .await?;
        answered.push(ch.id);
    }
    Ok(StepOutcome::DoneNotBefore(
        FIRST_CHECK,
        Some(Box::new(move |c| {
            Box::pin(async move { queries::mark_challenges_answered(c, &answered).await })
        })),
    ))
}

async fn await_validation(ctx: StepContext) -> StepResult {
    let cert = this_certificate(&ctx).await?;
    let order_url = cert.order_url.clone().unwrap_or_default();
    match ctx.deps.acme.order_state(&order_url).await? {
        OrderState::Ready | OrderState::Processing | OrderState::Valid => Ok(StepOutcome::Done),
        OrderState::Invalid(reason) => Err(StepError::Fail(format!(
            "the ACME server could not validate {reason}. Check that each \
             _acme-challenge.<domain> is a CNAME to _acme-challenge.<domain>.{}, then repeat \
             the request",
            ctx.deps.config.dns.root_domain
        ))),
        OrderState::Pending => {
            let answered = challenges(&ctx, &cert.id)
                .await?
                .iter()
                .filter_map(|c| c.answered_at)
                .max();
            let waited = answered
                .and_then(|at| (now() - at).to_std().ok())
                .unwrap_or_default();
            if waited > ctx.deps.config.acme.poll_timeout {
                return Err(StepError::Fail(format!(
                    "the ACME server did not validate the domains within {} seconds; check \
                     that each _acme-challenge CNAME points into {}",
                    ctx.deps.config.acme.poll_timeout.as_secs(),
                    ctx.deps.config.dns.root_domain
                )));
            }
            Ok(StepOutcome::Poll(POLL_INTERVAL))
        }
    }
}

async fn finalize_order(ctx: StepContext) -> StepResult {
    let cert = this_certificate(&ctx).await?;
    if cert.leaf_pem.is_some() {
        return Ok(StepOutcome::Done);
    }
    let order_url = cert.order_url.clone().unwrap_or_default();
    let key = cert
        .private_key_encrypted
        .as_deref()
        .map(|k| ctx.deps.cipher.decrypt(k))
        .transpose()
        .map_err(|e| StepError::Fail(e.to_string()))?
        .ok_or_else(|| StepError::Fail("the certificate's private key is missing".into()))?;
    let key_pem = String::from_utf8(key).map_err(|e| StepError::Fail(e.to_string()))?;
    let domains = DomainList::from_stored(&cert.domains)
        .ok_or_else(|| StepError::Fail("stored domains are unreadable".into()))?;
    let chain = match ctx
        .deps
        .acme
        .finalize(&order_url, &key_pem, &domains)
        .await?
    {
        Issuance::Issued(chain) => chain,
        Issuance::Submitted => return Ok(StepOutcome::Poll(FIRST_CHECK)),
        Issuance::NotYet => return Ok(StepOutcome::Poll(POLL_INTERVAL)),
    };
    let issued = crate::acme::parse_chain(&chain).map_err(|e| StepError::Fail(e.to_string()))?;
    tracing::info!(expires_at = %issued.expires_at, "certificate issued");
    let id = cert.id.clone();
    Ok(StepOutcome::DoneRecording(Box::new(move |c| {
        Box::pin(async move {
            queries::store_issued(
                c,
                &id,
                &issued.leaf_pem,
                &issued.chain_pem,
                issued.expires_at,
            )
            .await
        })
    })))
}

/// Removes DNS records (a record already gone is fine); returns the write
/// that forgets them, for the caller to commit with its progress. Until
/// then they stay listed, and removing them again is harmless.
pub async fn remove_records(
    ctx: &StepContext,
    records: Vec<DnsRecordRow>,
) -> Result<Option<Record>, StepError> {
    if records.is_empty() {
        return Ok(None);
    }
    for record in &records {
        ctx.deps
            .dns
            .remove_txt(&record.name, &record.value)
            .await
            .map_err(|e| StepError::Retry(e.to_string()))?;
    }
    let ids: Vec<String> = records.into_iter().map(|r| r.id).collect();
    Ok(Some(Box::new(move |c| {
        Box::pin(async move { queries::delete_dns_records(c, &ids).await })
    })))
}

/// After the certificate is in place, so that a DNS outage now cannot cost
/// an issued certificate: records that cannot be removed stay listed, and
/// the next removal (the instance's deprovision at the latest) takes them.
async fn remove_txt_records(ctx: StepContext) -> StepResult {
    match remove_challenge_records(&ctx).await {
        Ok(forget) => Ok(StepOutcome::recording(forget)),
        Err(e) => {
            tracing::warn!(error = ?e, "challenge records stay listed for a later clean-up");
            Ok(StepOutcome::Done)
        }
    }
}

/// Removes the TXT records of this operation's challenges; also run when
/// the operation fails, so a failed order leaves nothing in DNS. Returns
/// the write that forgets them, as `remove_records`.
pub async fn remove_challenge_records(ctx: &StepContext) -> Result<Option<Record>, StepError> {
    let Some(cert) = this_certificate_if_any(ctx).await? else {
        return Ok(None);
    };
    let names: Vec<(String, String)> = challenges(ctx, &cert.id)
        .await?
        .into_iter()
        .map(|ch| (ch.txt_name, ch.txt_value))
        .collect();
    let id = ctx.instance.id.clone();
    let records: Vec<DnsRecordRow> = ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::dns_records_of(c, &id).await }))
        .await?
        .into_iter()
        .filter(|r| names.iter().any(|(n, v)| *n == r.name && *v == r.value))
        .collect();
    remove_records(ctx, records).await
}

async fn install_certificate(ctx: StepContext) -> StepResult {
    let cert = certificate_in_use(&ctx).await?;
    let request = OperationRequest::parse(&ctx.operation);
    let instance_id = ctx.instance.id.clone();
    let update = request
        .parameters
        .as_ref()
        .map(|p| (cert.domains.clone(), request.domains.clone(), p.to_string()));
    Ok(StepOutcome::DoneRecording(Box::new(move |c| {
        Box::pin(async move {
            let names: Vec<&str>;
            let update = match &update {
                Some((json, domains, params)) => {
                    names = domains.iter().map(String::as_str).collect();
                    Some((json.as_str(), names.as_slice(), params.as_str()))
                }
                None => None,
            };
            queries::activate_certificate(c, &instance_id, &cert.id, update).await
        })
    })))
}
