//! ALIAS records that send a user's traffic (`<domain>.<DNS_ROOT_DOMAIN>`,
//! the target of the user's CNAME) to a load balancer or a distribution.

use aws_sdk_route53::types::{
    AliasTarget as R53Alias, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, RrType,
};

use super::alb::AliasTarget;
use super::{Cloud, CloudError, built};

/// CloudFront's hosted zone, the same for every distribution.
pub const CLOUDFRONT_HOSTED_ZONE_ID: &str = "Z2FDTNDATAQYW2";

/// Challenge records live briefly; a short TTL keeps resolvers from holding
/// on to an old value.
const TXT_TTL: i64 = 60;

impl Cloud {
    fn zone_id(&self) -> Result<&str, CloudError> {
        self.config
            .route53_zone_id
            .as_deref()
            .ok_or_else(|| CloudError::unexpected("route53", "ROUTE53_ZONE_ID is not set"))
    }

    /// Points the A and AAAA records of `name` at the target (UPSERT, so a
    /// repeat or a new target is fine). Returns the change to wait for.
    pub async fn upsert_alias(
        &self,
        name: &str,
        target: &AliasTarget,
    ) -> Result<String, CloudError> {
        const OP: &str = "route53:ChangeResourceRecordSets";
        let mut changes = Vec::new();
        for rr_type in [RrType::A, RrType::Aaaa] {
            let alias = built(
                OP,
                R53Alias::builder()
                    .dns_name(&target.dns_name)
                    .hosted_zone_id(&target.hosted_zone_id)
                    .evaluate_target_health(false)
                    .build(),
            )?;
            let set = built(
                OP,
                ResourceRecordSet::builder()
                    .name(name)
                    .r#type(rr_type)
                    .alias_target(alias)
                    .build(),
            )?;
            changes.push(built(
                OP,
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(set)
                    .build(),
            )?);
        }
        self.change(changes).await.map(|id| id.unwrap_or_default())
    }

    /// Deletes the A and AAAA records of `name` that point at `target`,
    /// exactly as they stand (Route53 deletes only an exact match). Records
    /// that point elsewhere are someone else's now and stay; none there is
    /// fine.
    pub async fn delete_alias(&self, name: &str, target: &AliasTarget) -> Result<(), CloudError> {
        let changes = self
            .record_sets_at(name, RrType::A, 2)
            .await?
            .into_iter()
            .filter(|s| matches!(s.r#type(), RrType::A | RrType::Aaaa))
            .filter(|s| {
                s.alias_target()
                    .is_some_and(|a| record_name(a.dns_name()) == record_name(&target.dns_name))
            })
            .map(|s| {
                built(
                    "route53:ChangeResourceRecordSets",
                    Change::builder()
                        .action(ChangeAction::Delete)
                        .resource_record_set(s)
                        .build(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if changes.is_empty() {
            return Ok(());
        }
        match self.change(changes).await {
            // Gone between the listing and the change: what we wanted.
            Err(e) if e.is(&["InvalidChangeBatch"]) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Adds one value to the TXT set at `name` (an apex and its wildcard
    /// share a name).
    pub async fn add_txt(&self, name: &str, value: &str) -> Result<(), CloudError> {
        let mut values = self.txt_values(name).await?;
        let quoted = format!("\"{value}\"");
        if values.contains(&quoted) {
            return Ok(());
        }
        values.push(quoted);
        let change = self.txt_change(ChangeAction::Upsert, name, values)?;
        // Not waited for here: the DNS wait step gives every record of the
        // order DNS_PROPAGATION_SLEEP_TIME at once.
        self.change(vec![change]).await.map(|_| ())
    }

    /// Removes exactly this value from the TXT set at `name`; one already
    /// gone is fine.
    pub async fn remove_txt(&self, name: &str, value: &str) -> Result<(), CloudError> {
        let values = self.txt_values(name).await?;
        let quoted = format!("\"{value}\"");
        if !values.contains(&quoted) {
            return Ok(());
        }
        let rest: Vec<String> = values.iter().filter(|v| **v != quoted).cloned().collect();
        let change = if rest.is_empty() {
            self.txt_change(ChangeAction::Delete, name, values)?
        } else {
            self.txt_change(ChangeAction::Upsert, name, rest)?
        };
        match self.change(vec![change]).await {
            Err(e) if e.is(&["InvalidChangeBatch"]) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The values (quoted, as Route53 keeps them) of the TXT set at `name`.
    async fn txt_values(&self, name: &str) -> Result<Vec<String>, CloudError> {
        Ok(self
            .record_sets_at(name, RrType::Txt, 1)
            .await?
            .iter()
            .filter(|s| s.r#type() == &RrType::Txt)
            .flat_map(|s| s.resource_records().iter().map(|r| r.value().to_string()))
            .collect())
    }

    /// The record sets named `name`, from `rr_type` on (Route53 lists in
    /// name and type order), `max` at most.
    async fn record_sets_at(
        &self,
        name: &str,
        rr_type: RrType,
        max: i32,
    ) -> Result<Vec<ResourceRecordSet>, CloudError> {
        let wanted = record_name(name);
        let listed = self
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(self.zone_id()?)
            .start_record_name(name)
            .start_record_type(rr_type)
            .max_items(max)
            .send()
            .await
            .map_err(|e| CloudError::sdk("route53:ListResourceRecordSets", e))?;
        Ok(listed
            .resource_record_sets
            .into_iter()
            .filter(|s| record_name(s.name()) == wanted)
            .collect())
    }

    fn txt_change(
        &self,
        action: ChangeAction,
        name: &str,
        values: Vec<String>,
    ) -> Result<Change, CloudError> {
        const OP: &str = "route53:ChangeResourceRecordSets";
        let records = values
            .into_iter()
            .map(|v| built(OP, ResourceRecord::builder().value(v).build()))
            .collect::<Result<Vec<_>, _>>()?;
        let set = built(
            OP,
            ResourceRecordSet::builder()
                .name(name)
                .r#type(RrType::Txt)
                .ttl(TXT_TTL)
                .set_resource_records(Some(records))
                .build(),
        )?;
        built(
            OP,
            Change::builder()
                .action(action)
                .resource_record_set(set)
                .build(),
        )
    }

    async fn change(&self, changes: Vec<Change>) -> Result<Option<String>, CloudError> {
        const OP: &str = "route53:ChangeResourceRecordSets";
        let batch = built(
            OP,
            ChangeBatch::builder().set_changes(Some(changes)).build(),
        )?;
        let out = self
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(self.zone_id()?)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| CloudError::sdk(OP, e))?;
        Ok(out.change_info.map(|c| c.id))
    }

    /// Whether Route53 has applied a change everywhere.
    pub async fn change_in_sync(&self, change_id: &str) -> Result<bool, CloudError> {
        let out = self
            .route53
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(|e| CloudError::sdk("route53:GetChange", e))?;
        Ok(out
            .change_info
            .is_some_and(|c| c.status == ChangeStatus::Insync))
    }
}

/// A record name as Route53 answers it, comparable with ours: no final
/// dot, lower case, and `*` where Route53 writes `\052`.
fn record_name(name: &str) -> String {
    name.trim_end_matches('.')
        .replace("\\052", "*")
        .to_ascii_lowercase()
}
