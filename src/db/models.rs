use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;

pub fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `cloud_resources.kind`
pub mod resource_kind {
    pub const IAM_SERVER_CERTIFICATE: &str = "iam_server_certificate";
    pub const ACM_CERTIFICATE: &str = "acm_certificate";
    pub const LISTENER_CERTIFICATE: &str = "listener_certificate";
    pub const CLOUDFRONT_DISTRIBUTION: &str = "cloudfront_distribution";
    pub const ROUTE53_ALIAS: &str = "route53_alias";
}

/// `service_instances.state`
pub mod instance_state {
    pub const PROVISIONING: &str = "provisioning";
    pub const PROVISIONED: &str = "provisioned";
    pub const FAILED: &str = "failed";
    pub const DEPROVISIONING: &str = "deprovisioning";
    /// A tombstone: kept so `last_operation` can still answer `succeeded`.
    pub const DEPROVISIONED: &str = "deprovisioned";
}

/// `operations.state`, spelled as OSB spells `last_operation.state`.
pub mod operation_state {
    pub const IN_PROGRESS: &str = "in progress";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = acme_accounts)]
pub struct AcmeAccountRow {
    pub id: String,
    pub directory_url: String,
    pub credentials_encrypted: Vec<u8>,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = service_instances)]
pub struct InstanceRow {
    pub id: String,
    pub service_id: String,
    pub plan_id: String,
    pub organization_guid: String,
    pub space_guid: String,
    pub context: Option<String>,
    pub parameters: String,
    pub domains: String,
    pub state: String,
    pub current_certificate_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = operations)]
pub struct OperationRow {
    pub id: String,
    pub instance_id: String,
    pub kind: String,
    pub state: String,
    pub next_step: i32,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub description: String,
    pub last_error: Option<String>,
    pub request: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

impl OperationRow {
    pub fn start(instance_id: &str, kind: &str, description: &str, request: String) -> Self {
        let now = now();
        OperationRow {
            id: new_id(),
            instance_id: instance_id.to_string(),
            kind: kind.to_string(),
            state: operation_state::IN_PROGRESS.to_string(),
            next_step: 0,
            attempts: 0,
            next_attempt_at: now,
            description: description.to_string(),
            last_error: None,
            request,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    pub fn in_progress(&self) -> bool {
        self.state == operation_state::IN_PROGRESS
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = certificates)]
pub struct CertificateRow {
    pub id: String,
    pub instance_id: String,
    pub operation_id: String,
    pub domains: String,
    pub private_key_encrypted: Option<Vec<u8>>,
    pub order_url: Option<String>,
    pub leaf_pem: Option<String>,
    pub chain_pem: Option<String>,
    pub expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub issued_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = challenges)]
pub struct ChallengeRow {
    pub id: String,
    pub certificate_id: String,
    pub domain: String,
    pub authorization_url: String,
    pub challenge_url: String,
    pub txt_name: String,
    pub txt_value: String,
    pub answered_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = dns_records)]
pub struct DnsRecordRow {
    pub id: String,
    pub instance_id: String,
    pub name: String,
    pub record_type: String,
    pub value: String,
    pub created_at: NaiveDateTime,
}

/// An operation as `last_operation` tells it.
#[derive(Queryable, Selectable, Clone, Debug, PartialEq)]
#[diesel(table_name = operations)]
pub struct OperationStatus {
    pub kind: String,
    pub state: String,
    pub description: String,
}

impl OperationStatus {
    pub fn in_progress(&self) -> bool {
        self.state == operation_state::IN_PROGRESS
    }
}

/// A cloud object the broker made, or is about to make (`arn` still NULL).
#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = cloud_resources)]
pub struct CloudResourceRow {
    pub id: String,
    pub instance_id: String,
    pub kind: String,
    pub name: String,
    pub certificate_id: Option<String>,
    pub arn: Option<String>,
    pub details: String,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = bindings)]
pub struct BindingRow {
    pub id: String,
    pub instance_id: String,
    pub service_id: String,
    pub plan_id: String,
    pub app_guid: Option<String>,
    pub bind_resource: Option<String>,
    pub parameters: String,
    pub certificate_id: String,
    pub created_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = operation_steps)]
pub struct StepRunRow {
    pub id: String,
    pub operation_id: String,
    pub step: String,
    pub replica: String,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}
