//! The AWS steps of the edge plans: the certificate stored in IAM or ACM,
//! put on the least used load balancer listener, and the ALIAS records
//! that send the domains' traffic there; then, once the new certificate is
//! current, the old one retired. Every object is recorded in
//! `cloud_resources` before it is made, so a retry finds it and clean-up
//! removes exactly it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::certificate::{self, after_new_certificate, certificate_in_use, this_certificate};
use super::cleanup;
use super::{Step, StepContext, StepError, StepOutcome, StepResult};
use crate::cloud::alb::AliasTarget;
use crate::cloud::certificates::{CertificateUpload, StoredCertificate};
use crate::cloud::cloudfront::{DistributionInfo, DistributionSpec};
use crate::cloud::route53::CLOUDFRONT_HOSTED_ZONE_ID;
use crate::cloud::{Cloud, CloudError};
use crate::config::CertificateStore;
use crate::db::models::{CertificateRow, CloudResourceRow, new_id, now, resource_kind};
use crate::db::queries;
use crate::domain::{CdnSettings, DomainList, Plan};
use crate::pipeline::OperationRequest;

/// How often a Route53 change is looked at until it is in sync.
const CHANGE_POLL: Duration = Duration::from_secs(2);

pub const UPLOAD_CERTIFICATE: Step = Step {
    name: "upload_certificate",
    description: "Uploading the certificate to AWS",
    run: |ctx| upload_certificate(ctx).boxed(),
    max_attempts: 6,
};

pub const ADD_TO_LOAD_BALANCER: Step = Step {
    name: "add_to_load_balancer",
    description: "Adding the certificate to the load balancer",
    run: |ctx| add_to_load_balancer(ctx).boxed(),
    max_attempts: 6,
};

pub const WRITE_ALIAS_RECORDS: Step = Step {
    name: "write_alias_records",
    description: "Creating DNS ALIAS records",
    run: |ctx| write_alias_records(ctx).boxed(),
    max_attempts: 6,
};

pub const WAIT_FOR_ALIAS_RECORDS: Step = Step {
    name: "wait_for_alias_records",
    description: "Waiting for the DNS ALIAS records to take effect",
    run: |ctx| wait_for_alias_records(ctx).boxed(),
    max_attempts: 6,
};

pub const OVERLAP_OLD_CERTIFICATE: Step = Step {
    name: "overlap_old_certificate",
    description: "Keeping the old certificate on the load balancer while DNS moves",
    run: |ctx| overlap_old_certificate(ctx).boxed(),
    max_attempts: 6,
};

pub const RETIRE_OLD_RESOURCES: Step = Step {
    name: "retire_old_resources",
    description: "Removing the old certificate and the DNS records of dropped domains",
    run: |ctx| retire_old_resources(ctx).boxed(),
    max_attempts: 8,
};

pub const REMOVE_ALIAS_RECORDS: Step = Step {
    name: "remove_alias_records",
    description: "Removing DNS ALIAS records",
    run: |ctx| remove_kind(ctx, resource_kind::ROUTE53_ALIAS).boxed(),
    max_attempts: 8,
};

pub const REMOVE_FROM_LOAD_BALANCER: Step = Step {
    name: "remove_from_load_balancer",
    description: "Removing the certificate from the load balancer",
    run: |ctx| remove_kind(ctx, resource_kind::LISTENER_CERTIFICATE).boxed(),
    max_attempts: 8,
};

pub const DELETE_STORED_CERTIFICATES: Step = Step {
    name: "delete_stored_certificates",
    description: "Removing the certificates from AWS",
    run: |ctx| delete_stored_certificates(ctx).boxed(),
    max_attempts: 8,
};

/// `domain`: provision, update and renew alike; a new certificate, then
/// traffic moved to it, then the old one retired.
pub const ALB_ISSUE_AND_ACTIVATE: &[Step] = after_new_certificate![
    UPLOAD_CERTIFICATE,
    ADD_TO_LOAD_BALANCER,
    WRITE_ALIAS_RECORDS,
    WAIT_FOR_ALIAS_RECORDS,
    certificate::INSTALL_CERTIFICATE,
    OVERLAP_OLD_CERTIFICATE,
    RETIRE_OLD_RESOURCES,
    certificate::REMOVE_TXT_RECORDS,
];

/// `domain`: traffic away first, then the certificate off the listener,
/// then out of AWS, then what the broker kept itself.
pub const ALB_DEPROVISION: &[Step] = &[
    REMOVE_ALIAS_RECORDS,
    cleanup::REMOVE_DNS_RECORDS,
    REMOVE_FROM_LOAD_BALANCER,
    DELETE_STORED_CERTIFICATES,
    cleanup::DELETE_KEY_MATERIAL,
];

pub const APPLY_DISTRIBUTION: Step = Step {
    name: "apply_distribution",
    description: "Creating or updating the CloudFront distribution",
    run: |ctx| apply_distribution(ctx).boxed(),
    // A certificate just stored may look invalid to CloudFront for a while.
    max_attempts: 10,
};

pub const WAIT_FOR_DISTRIBUTION: Step = Step {
    name: "wait_for_distribution",
    description: "Waiting for the CloudFront distribution to deploy (this can take a while)",
    run: |ctx| wait_for_distribution(ctx).boxed(),
    // Polling spends no attempts; these are for errors while asking.
    max_attempts: 6,
};

pub const DISABLE_DISTRIBUTION: Step = Step {
    name: "disable_distribution",
    description: "Disabling the CloudFront distribution",
    run: |ctx| disable_distribution(ctx).boxed(),
    max_attempts: 8,
};

pub const WAIT_FOR_DISTRIBUTION_DISABLED: Step = Step {
    name: "wait_for_distribution_disabled",
    description: "Waiting for the CloudFront distribution to be disabled (this can take a while)",
    run: |ctx| wait_for_distribution_disabled(ctx).boxed(),
    max_attempts: 8,
};

pub const DELETE_DISTRIBUTION: Step = Step {
    name: "delete_distribution",
    description: "Deleting the CloudFront distribution",
    run: |ctx| delete_distribution(ctx).boxed(),
    max_attempts: 8,
};

/// `domain-with-cdn`: provision, update and renew alike; a new
/// certificate, the distribution made or changed to serve it, traffic
/// pointed at it, then the old certificate retired.
pub const CDN_ISSUE_AND_ACTIVATE: &[Step] = after_new_certificate![
    UPLOAD_CERTIFICATE,
    APPLY_DISTRIBUTION,
    WAIT_FOR_DISTRIBUTION,
    WRITE_ALIAS_RECORDS,
    WAIT_FOR_ALIAS_RECORDS,
    certificate::INSTALL_CERTIFICATE,
    RETIRE_OLD_RESOURCES,
    certificate::REMOVE_TXT_RECORDS,
];

/// `domain-with-cdn`, an update of settings only: same domains, same
/// certificate.
pub const CDN_UPDATE_SETTINGS: &[Step] = &[
    APPLY_DISTRIBUTION,
    WAIT_FOR_DISTRIBUTION,
    certificate::INSTALL_CERTIFICATE,
];

pub const CDN_DEPROVISION: &[Step] = &[
    REMOVE_ALIAS_RECORDS,
    cleanup::REMOVE_DNS_RECORDS,
    DISABLE_DISTRIBUTION,
    WAIT_FOR_DISTRIBUTION_DISABLED,
    DELETE_DISTRIBUTION,
    DELETE_STORED_CERTIFICATES,
    cleanup::DELETE_KEY_MATERIAL,
];

impl From<CloudError> for StepError {
    fn from(e: CloudError) -> Self {
        if e.is_permanent() {
            StepError::Fail(e.to_string())
        } else {
            StepError::Retry(e.to_string())
        }
    }
}

fn cloud(ctx: &StepContext) -> Result<Arc<Cloud>, StepError> {
    ctx.deps.cloud.clone().ok_or_else(|| {
        StepError::Fail(
            "this broker has no AWS settings (ROUTE53_ZONE_ID and the plan's own); \
             ask its operator to restore them"
                .into(),
        )
    })
}

async fn resources(ctx: &StepContext) -> Result<Vec<CloudResourceRow>, StepError> {
    let id = ctx.instance.id.clone();
    Ok(ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::cloud_resources_of(c, &id).await }))
        .await?)
}

async fn insert_resource(ctx: &StepContext, row: CloudResourceRow) -> Result<(), StepError> {
    ctx.deps
        .store
        .write("insert_cloud_resource", move |c| {
            Box::pin(async move { queries::insert_cloud_resource(c, &row).await })
        })
        .await?;
    Ok(())
}

async fn resource_made(
    ctx: &StepContext,
    id: &str,
    arn: &str,
    details: &impl serde::Serialize,
) -> Result<(), StepError> {
    let details = serde_json::to_string(details).expect("details serialize");
    let (id, arn) = (id.to_string(), arn.to_string());
    ctx.deps
        .store
        .write("cloud_resource_made", move |c| {
            Box::pin(async move { queries::cloud_resource_made(c, &id, &arn, &details).await })
        })
        .await?;
    Ok(())
}

async fn forget_resource(ctx: &StepContext, id: &str) -> Result<(), StepError> {
    let id = id.to_string();
    ctx.deps
        .store
        .write("delete_cloud_resource", move |c| {
            Box::pin(async move { queries::delete_cloud_resource(c, &id).await })
        })
        .await?;
    Ok(())
}

fn new_resource(
    ctx: &StepContext,
    kind: &str,
    name: &str,
    certificate_id: Option<&str>,
    arn: Option<&str>,
) -> CloudResourceRow {
    CloudResourceRow {
        id: new_id(),
        instance_id: ctx.instance.id.clone(),
        kind: kind.to_string(),
        name: name.to_string(),
        certificate_id: certificate_id.map(str::to_string),
        arn: arn.map(str::to_string),
        details: "{}".into(),
        created_at: now(),
    }
}

fn plan(ctx: &StepContext) -> Plan {
    super::plan_of(&ctx.instance)
}

/// `/alb/<prefix>/` or `/cloudfront/<prefix>/`, as the original broker.
fn iam_path(ctx: &StepContext, prefix: &str) -> String {
    let service = match plan(ctx) {
        Plan::DomainWithCdn => "cloudfront",
        _ => "alb",
    };
    format!("/{service}/{prefix}/")
}

/// `<instance id>-<YYYY-MM-DD>-<certificate id>`, the original's name,
/// with what IAM refuses in a name replaced and the instance id shortened
/// so that the whole stays within IAM's 128 characters.
fn iam_name(instance_id: &str, certificate_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let tail = format!("-{}-{}", now().format("%Y-%m-%d"), clean(certificate_id));
    let head: String = clean(instance_id)
        .chars()
        .take(128usize.saturating_sub(tail.len()))
        .collect();
    format!("{head}{tail}")
}

fn stored_kind(store: CertificateStore) -> &'static str {
    match store {
        CertificateStore::Iam => resource_kind::IAM_SERVER_CERTIFICATE,
        CertificateStore::Acm => resource_kind::ACM_CERTIFICATE,
    }
}

fn issued_parts(
    ctx: &StepContext,
    cert: &CertificateRow,
) -> Result<(String, String, String), StepError> {
    let missing = || StepError::Fail("the issued certificate is missing".into());
    let leaf = cert.leaf_pem.clone().ok_or_else(missing)?;
    let chain = cert.chain_pem.clone().ok_or_else(missing)?;
    let key = cert
        .private_key_encrypted
        .as_deref()
        .ok_or_else(missing)
        .and_then(|k| {
            ctx.deps
                .cipher
                .decrypt(k)
                .map_err(|e| StepError::Fail(format!("the certificate's key: {e}")))
        })
        .and_then(|k| {
            String::from_utf8(k)
                .map_err(|_| StepError::Fail("the certificate's key is not PEM".into()))
        })?;
    Ok((leaf, chain, key))
}

fn first_domain(cert: &CertificateRow) -> Result<String, StepError> {
    DomainList::from_stored(&cert.domains)
        .and_then(|d| d.names().first().map(|n| n.to_string()))
        .ok_or_else(|| StepError::Fail("the certificate's domains are unreadable".into()))
}

/// What an ACM certificate of this row is found by: its certificate's id
/// and first domain.
async fn acm_search_key(
    ctx: &StepContext,
    row: &CloudResourceRow,
) -> Result<Option<(String, String)>, StepError> {
    let Some(id) = row.certificate_id.clone() else {
        return Ok(None);
    };
    let lookup = id.clone();
    let cert = ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::certificate(c, &lookup).await }))
        .await?;
    Ok(match cert {
        Some(cert) => Some((id, first_domain(&cert)?)),
        None => None,
    })
}

async fn upload_certificate(ctx: StepContext) -> StepResult {
    let cloud = cloud(&ctx)?;
    let cert = this_certificate(&ctx).await?;
    let store = cloud.config.certificate_store();
    let kind = stored_kind(store);
    let existing = resources(&ctx)
        .await?
        .into_iter()
        .find(|r| r.kind == kind && r.certificate_id.as_deref() == Some(&cert.id));
    let (row, retry) = match existing {
        Some(r) if r.arn.is_some() => return Ok(StepOutcome::Done),
        Some(r) => (r, true),
        None => {
            let row = new_resource(
                &ctx,
                kind,
                &iam_name(&ctx.instance.id, &cert.id),
                Some(&cert.id),
                None,
            );
            insert_resource(&ctx, row.clone()).await?;
            (row, false)
        }
    };
    let (leaf, chain, key) = issued_parts(&ctx, &cert)?;
    let path = iam_path(&ctx, &cloud.config.iam_certificate_prefix);
    let stored = cloud
        .store_certificate(
            &CertificateUpload {
                name: &row.name,
                path: &path,
                leaf_pem: &leaf,
                chain_pem: &chain,
                key_pem: &key,
                certificate_id: &cert.id,
                domain: &first_domain(&cert)?,
                for_cloudfront: plan(&ctx) == Plan::DomainWithCdn,
            },
            retry,
        )
        .await?;
    tracing::info!(arn = %stored.arn, "certificate stored in AWS");
    resource_made(&ctx, &row.id, &stored.arn, &stored).await?;
    Ok(StepOutcome::Done)
}

/// The stored certificate of this operation.
async fn stored_certificate(
    ctx: &StepContext,
    cert: &CertificateRow,
) -> Result<StoredCertificate, StepError> {
    resources(ctx)
        .await?
        .into_iter()
        .filter(|r| {
            [
                resource_kind::IAM_SERVER_CERTIFICATE,
                resource_kind::ACM_CERTIFICATE,
            ]
            .contains(&r.kind.as_str())
                && r.certificate_id.as_deref() == Some(&cert.id)
        })
        .find_map(|r| serde_json::from_str::<StoredCertificate>(&r.details).ok())
        .ok_or_else(|| StepError::Fail("the certificate was not stored in AWS".into()))
}

async fn add_to_load_balancer(ctx: StepContext) -> StepResult {
    let cloud = cloud(&ctx)?;
    let cert = this_certificate(&ctx).await?;
    let stored = stored_certificate(&ctx, &cert).await?;
    let existing = resources(&ctx).await?.into_iter().find(|r| {
        r.kind == resource_kind::LISTENER_CERTIFICATE
            && r.certificate_id.as_deref() == Some(&cert.id)
    });
    let row = match existing {
        Some(r) => r,
        None => {
            let listener = cloud.least_used_listener().await?;
            let row = new_resource(
                &ctx,
                resource_kind::LISTENER_CERTIFICATE,
                &listener,
                Some(&cert.id),
                Some(&stored.arn),
            );
            insert_resource(&ctx, row.clone()).await?;
            row
        }
    };
    let target = cloud
        .add_listener_certificate(&row.name, &stored.arn)
        .await?;
    tracing::info!(listener = %row.name, load_balancer = %target.dns_name, "certificate on the load balancer");
    resource_made(&ctx, &row.id, &stored.arn, &target).await?;
    Ok(StepOutcome::Done)
}

/// Where this operation's certificate is served, for the ALIAS records:
/// the instance's distribution, or the listener the certificate is on.
async fn alias_target(ctx: &StepContext, cert: &CertificateRow) -> Result<AliasTarget, StepError> {
    resources(ctx)
        .await?
        .into_iter()
        .find_map(|r| match r.kind.as_str() {
            resource_kind::CLOUDFRONT_DISTRIBUTION => {
                serde_json::from_str::<DistributionInfo>(&r.details)
                    .ok()
                    .map(|d| AliasTarget {
                        dns_name: d.domain_name,
                        hosted_zone_id: CLOUDFRONT_HOSTED_ZONE_ID.to_string(),
                    })
            }
            resource_kind::LISTENER_CERTIFICATE
                if r.certificate_id.as_deref() == Some(&cert.id) =>
            {
                serde_json::from_str::<AliasTarget>(&r.details).ok()
            }
            _ => None,
        })
        .ok_or_else(|| StepError::Fail("the certificate is not served anywhere yet".into()))
}

fn alias_name(ctx: &StepContext, domain: &str) -> String {
    format!("{domain}.{}", ctx.deps.config.dns.root_domain)
}

async fn write_alias_records(ctx: StepContext) -> StepResult {
    let cloud = cloud(&ctx)?;
    let cert = this_certificate(&ctx).await?;
    let target = alias_target(&ctx, &cert).await?;
    let domains = DomainList::from_stored(&cert.domains)
        .ok_or_else(|| StepError::Fail("the certificate's domains are unreadable".into()))?;
    let known = resources(&ctx).await?;
    for domain in domains.iter() {
        let name = alias_name(&ctx, domain.as_str());
        let row = match known
            .iter()
            .find(|r| r.kind == resource_kind::ROUTE53_ALIAS && r.name == name)
        {
            Some(r) => r.clone(),
            None => {
                let row = new_resource(&ctx, resource_kind::ROUTE53_ALIAS, &name, None, None);
                insert_resource(&ctx, row.clone()).await?;
                row
            }
        };
        // Where it will point, before it does: clean-up deletes only
        // records that point there.
        let mut details = AliasDetails {
            target: target.clone(),
            operation: ctx.operation.id.clone(),
            change_id: None,
        };
        resource_made(&ctx, &row.id, &name, &details).await?;
        details.change_id = Some(cloud.upsert_alias(&name, &target).await?);
        resource_made(&ctx, &row.id, &name, &details).await?;
    }
    Ok(StepOutcome::Done)
}

/// What the broker keeps of an ALIAS record it wrote.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct AliasDetails {
    target: AliasTarget,
    /// The operation that last pointed it, and the change that did.
    operation: String,
    change_id: Option<String>,
}

async fn wait_for_alias_records(ctx: StepContext) -> StepResult {
    let cloud = cloud(&ctx)?;
    // This operation's changes only: an older one may be long forgotten.
    let mut changes: Vec<String> = resources(&ctx)
        .await?
        .iter()
        .filter(|r| r.kind == resource_kind::ROUTE53_ALIAS)
        .filter_map(|r| serde_json::from_str::<AliasDetails>(&r.details).ok())
        .filter(|d| d.operation == ctx.operation.id)
        .filter_map(|d| d.change_id)
        .filter(|c| !c.is_empty())
        .collect();
    changes.sort();
    changes.dedup();
    for change in &changes {
        if !cloud.change_in_sync(change).await? {
            return Ok(StepOutcome::Poll(CHANGE_POLL));
        }
    }
    Ok(StepOutcome::Done)
}

/// What the instance no longer uses once its current certificate serves
/// its current domains: other certificates and their listener places, and
/// the ALIAS records of dropped domains. In the order they are removed.
fn retired(ctx: &StepContext, all: Vec<CloudResourceRow>) -> Vec<CloudResourceRow> {
    let current = ctx.instance.current_certificate_id.as_deref();
    let names: Vec<String> = DomainList::from_stored(&ctx.instance.domains)
        .map(|d| d.names().iter().map(|n| alias_name(ctx, n)).collect())
        .unwrap_or_default();
    let mut old: Vec<CloudResourceRow> = all
        .into_iter()
        .filter(|r| match r.kind.as_str() {
            resource_kind::ROUTE53_ALIAS => !names.contains(&r.name),
            _ => r.certificate_id.is_some() && r.certificate_id.as_deref() != current,
        })
        .collect();
    old.sort_by_key(|r| removal_order(&r.kind));
    old
}

/// Traffic first, then what serves it, then what it served.
fn removal_order(kind: &str) -> u8 {
    match kind {
        resource_kind::ROUTE53_ALIAS => 0,
        resource_kind::CLOUDFRONT_DISTRIBUTION => 1,
        resource_kind::LISTENER_CERTIFICATE => 2,
        _ => 3,
    }
}

async fn overlap_old_certificate(ctx: StepContext) -> StepResult {
    let old_on_listener = retired(&ctx, resources(&ctx).await?)
        .iter()
        .any(|r| r.kind == resource_kind::LISTENER_CERTIFICATE);
    if old_on_listener && ctx.deps.cloud.is_some() {
        let overlap = cloud(&ctx)?.config.alb_overlap;
        return Ok(StepOutcome::DoneNotBefore(overlap, None));
    }
    Ok(StepOutcome::Done)
}

async fn retire_old_resources(ctx: StepContext) -> StepResult {
    let old = retired(&ctx, resources(&ctx).await?);
    if old.is_empty() {
        return Ok(StepOutcome::Done);
    }
    let cloud = cloud(&ctx)?;
    for row in old {
        remove(&ctx, &cloud, &row).await?;
    }
    Ok(StepOutcome::Done)
}

/// Whether another instance has claimed the domain of an ALIAS record
/// since this one let it go: the record is then the other's (on a shared
/// load balancer it even points at the same target) and must stay.
async fn held_by_another_instance(ctx: &StepContext, alias: &str) -> Result<bool, StepError> {
    let suffix = format!(".{}", ctx.deps.config.dns.root_domain);
    let Some(domain) = alias.strip_suffix(&suffix).map(str::to_string) else {
        return Ok(false);
    };
    let id = ctx.instance.id.clone();
    let held = ctx
        .deps
        .store
        .read(move |c| {
            Box::pin(
                async move { queries::domains_held_by_others(c, &id, &[domain.as_str()]).await },
            )
        })
        .await?;
    Ok(!held.is_empty())
}

/// Removes one cloud object (already gone is fine) and forgets it.
async fn remove(ctx: &StepContext, cloud: &Cloud, row: &CloudResourceRow) -> Result<(), StepError> {
    match row.kind.as_str() {
        resource_kind::ROUTE53_ALIAS => {
            // No target recorded: the record was never written.
            if let Ok(alias) = serde_json::from_str::<AliasDetails>(&row.details)
                && !held_by_another_instance(ctx, &row.name).await?
            {
                cloud.delete_alias(&row.name, &alias.target).await?;
            }
        }
        resource_kind::LISTENER_CERTIFICATE => {
            if let Some(arn) = &row.arn {
                cloud.remove_listener_certificate(&row.name, arn).await?;
            }
        }
        resource_kind::IAM_SERVER_CERTIFICATE => {
            cloud
                .delete_certificate(
                    CertificateStore::Iam,
                    &row.name,
                    row.arn.as_deref().unwrap_or_default(),
                )
                .await?
        }
        resource_kind::ACM_CERTIFICATE => {
            let arn = match &row.arn {
                Some(arn) => Some(arn.clone()),
                // An import may have happened before the crash that kept
                // its ARN from being recorded: look for its tag.
                None => match acm_search_key(ctx, row).await? {
                    Some((certificate_id, domain)) => {
                        cloud
                            .find_acm_certificate(
                                &certificate_id,
                                &domain,
                                plan(ctx) == Plan::DomainWithCdn,
                            )
                            .await?
                    }
                    None => None,
                },
            };
            if let Some(arn) = arn {
                cloud
                    .delete_certificate(CertificateStore::Acm, &row.name, &arn)
                    .await?;
            }
        }
        other => {
            return Err(StepError::Fail(format!(
                "unknown kind of cloud resource {other:?}"
            )));
        }
    }
    tracing::info!(kind = %row.kind, name = %row.name, "cloud resource removed");
    forget_resource(ctx, &row.id).await
}

/// Deprovision: removes every object of one kind.
async fn remove_kind(ctx: StepContext, kind: &'static str) -> StepResult {
    let rows: Vec<CloudResourceRow> = resources(&ctx)
        .await?
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect();
    if rows.is_empty() {
        return Ok(StepOutcome::Done);
    }
    let cloud = cloud(&ctx)?;
    for row in rows.iter().rev() {
        remove(&ctx, &cloud, row).await?;
    }
    Ok(StepOutcome::Done)
}

async fn delete_stored_certificates(ctx: StepContext) -> StepResult {
    remove_kind(ctx.clone(), resource_kind::IAM_SERVER_CERTIFICATE).await?;
    remove_kind(ctx, resource_kind::ACM_CERTIFICATE).await
}

/// The distribution's settings: the operation's parameters for an update,
/// the instance's otherwise.
fn cdn_settings(ctx: &StepContext, cloud: &Cloud) -> Result<CdnSettings, StepError> {
    let request = OperationRequest::parse(&ctx.operation);
    let parameters = match request.parameters {
        Some(p) => p,
        None => serde_json::from_str(&ctx.instance.parameters)
            .map_err(|e| StepError::Fail(format!("the instance's parameters: {e}")))?,
    };
    cdn_settings_from(cloud, &parameters)
}

fn cdn_settings_from(
    cloud: &Cloud,
    parameters: &serde_json::Value,
) -> Result<CdnSettings, StepError> {
    let default_origin = cloud
        .config
        .default_cloudfront_origin
        .as_ref()
        .map(|d| d.to_string())
        .ok_or_else(|| StepError::Fail("DEFAULT_CLOUDFRONT_ORIGIN is not set".into()))?;
    CdnSettings::parse(
        parameters.as_object().unwrap_or(&serde_json::Map::new()),
        &default_origin,
    )
    .map_err(|e| StepError::Fail(e.to_string()))
}

fn distribution_row(all: Vec<CloudResourceRow>) -> Option<CloudResourceRow> {
    all.into_iter()
        .find(|r| r.kind == resource_kind::CLOUDFRONT_DISTRIBUTION)
}

async fn apply_distribution(ctx: StepContext) -> StepResult {
    let cloud = cloud(&ctx)?;
    let cert = certificate_in_use(&ctx).await?;
    let stored = stored_certificate(&ctx, &cert).await?;
    let settings = cdn_settings(&ctx, &cloud)?;
    let domains = OperationRequest::parse(&ctx.operation).domains;
    let aliases: Vec<&str> = domains.iter().map(String::as_str).collect();
    let spec = DistributionSpec {
        caller_reference: &ctx.instance.id,
        aliases: &aliases,
        settings: &settings,
        certificate: &stored,
    };
    let row = match distribution_row(resources(&ctx).await?) {
        Some(row) if row.arn.is_some() => {
            let id = row.arn.as_deref().unwrap_or_default();
            cloud.update_distribution(id, &spec).await?;
            tracing::info!(distribution = %id, "distribution updated");
            return Ok(StepOutcome::Done);
        }
        Some(row) => row,
        None => {
            let row = new_resource(
                &ctx,
                resource_kind::CLOUDFRONT_DISTRIBUTION,
                &ctx.instance.id,
                None,
                None,
            );
            insert_resource(&ctx, row.clone()).await?;
            row
        }
    };
    let made = cloud.create_distribution(&spec).await?;
    tracing::info!(distribution = %made.id, domain = %made.domain_name, "distribution created");
    resource_made(&ctx, &row.id, &made.id, &made).await?;
    Ok(StepOutcome::Done)
}

/// The instance's distribution row and its id, looked up by caller
/// reference if a crash kept it from being recorded (None if it was never
/// made); None when the instance has no distribution row.
async fn recorded_distribution(
    ctx: &StepContext,
) -> Result<Option<(CloudResourceRow, Option<String>, Arc<Cloud>)>, StepError> {
    let Some(row) = distribution_row(resources(ctx).await?) else {
        return Ok(None);
    };
    let cloud = cloud(ctx)?;
    if let Some(id) = row.arn.clone() {
        return Ok(Some((row, Some(id), cloud)));
    }
    let found = cloud.find_distribution(&row.name).await?;
    if let Some(found) = &found {
        resource_made(ctx, &row.id, &found.id, found).await?;
    }
    Ok(Some((row, found.map(|f| f.id), cloud)))
}

async fn wait_for_distribution(ctx: StepContext) -> StepResult {
    let Some((_, Some(id), cloud)) = recorded_distribution(&ctx).await? else {
        return Err(StepError::Fail("the instance has no distribution".into()));
    };
    match cloud.distribution_state(&id).await? {
        Some(state) if state.deployed => Ok(StepOutcome::Done),
        Some(_) => Ok(StepOutcome::Poll(cloud.config.poll_interval)),
        None => Err(StepError::Fail(format!(
            "the distribution {id} has disappeared"
        ))),
    }
}

async fn disable_distribution(ctx: StepContext) -> StepResult {
    if let Some((_, Some(id), cloud)) = recorded_distribution(&ctx).await? {
        cloud.disable_distribution(&id).await?;
    }
    Ok(StepOutcome::Done)
}

async fn wait_for_distribution_disabled(ctx: StepContext) -> StepResult {
    if let Some((_, Some(id), cloud)) = recorded_distribution(&ctx).await?
        && let Some(state) = cloud.distribution_state(&id).await?
        && (state.enabled || !state.deployed)
    {
        return Ok(StepOutcome::Poll(cloud.config.poll_interval));
    }
    Ok(StepOutcome::Done)
}

async fn delete_distribution(ctx: StepContext) -> StepResult {
    if let Some((row, id, cloud)) = recorded_distribution(&ctx).await? {
        if let Some(id) = id {
            cloud.delete_distribution(&id).await?;
            tracing::info!(distribution = %id, "distribution deleted");
        }
        forget_resource(&ctx, &row.id).await?;
    }
    Ok(StepOutcome::Done)
}

/// After a failed update or renewal of an edge instance: its current
/// domains, settings and certificate served again where they were (the
/// failed operation may have changed the distribution or moved the ALIAS
/// records), and ALIAS records it wrote for domains the instance does not
/// keep removed. Its new certificate stays listed, and the next operation
/// or a deprovision retires it.
pub async fn restore_current(ctx: &StepContext) -> Result<(), StepError> {
    let plan = plan(ctx);
    let all = resources(ctx).await?;
    let touched = all.iter().any(|r| {
        serde_json::from_str::<AliasDetails>(&r.details)
            .is_ok_and(|d| d.operation == ctx.operation.id)
    }) || OperationRequest::parse(&ctx.operation).keep_certificate
        || this_certificate_if_stored(ctx, &all).await?;
    if plan == Plan::Certificate || !touched {
        return Ok(());
    }
    let Some(current_id) = ctx.instance.current_certificate_id.clone() else {
        return Ok(());
    };
    let cloud = cloud(ctx)?;
    let current = ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::certificate(c, &current_id).await }))
        .await?
        .ok_or_else(|| StepError::Fail("the instance's certificate is missing".into()))?;
    let stored = stored_certificate(ctx, &current).await?;
    let domains = DomainList::from_stored(&ctx.instance.domains)
        .ok_or_else(|| StepError::Fail("the instance's domains are unreadable".into()))?;
    if plan == Plan::DomainWithCdn
        && let Some((_, Some(id), _)) = recorded_distribution(ctx).await?
    {
        let parameters: serde_json::Value = serde_json::from_str(&ctx.instance.parameters)
            .map_err(|e| StepError::Fail(format!("the instance's parameters: {e}")))?;
        let settings = cdn_settings_from(&cloud, &parameters)?;
        let aliases = domains.names();
        let spec = DistributionSpec {
            caller_reference: &ctx.instance.id,
            aliases: &aliases,
            settings: &settings,
            certificate: &stored,
        };
        cloud.update_distribution(&id, &spec).await?;
    }
    let target = alias_target(ctx, &current).await?;
    for domain in domains.iter() {
        cloud
            .upsert_alias(&alias_name(ctx, domain.as_str()), &target)
            .await?;
    }
    let names: Vec<String> = domains.names().iter().map(|n| alias_name(ctx, n)).collect();
    for row in all {
        if row.kind == resource_kind::ROUTE53_ALIAS && !names.contains(&row.name) {
            remove(ctx, &cloud, &row).await?;
        }
    }
    tracing::info!("served what the instance served before the failed operation");
    Ok(())
}

/// Whether this operation's certificate got as far as AWS.
async fn this_certificate_if_stored(
    ctx: &StepContext,
    all: &[CloudResourceRow],
) -> Result<bool, StepError> {
    let Ok(cert) = this_certificate(ctx).await else {
        return Ok(false);
    };
    Ok(all
        .iter()
        .any(|r| r.certificate_id.as_deref() == Some(&cert.id)))
}
