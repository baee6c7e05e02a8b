//! Deprovision: remove, in reverse, everything the broker made for an
//! instance, tolerating what is already gone. Works on half-built instances.

use futures_util::FutureExt;

use super::{Step, StepContext, StepOutcome, StepResult};
use crate::db::queries;

pub const REMOVE_DNS_RECORDS: Step = Step {
    name: "remove_dns_records",
    description: "Removing the DNS records the broker wrote",
    run: |ctx| remove_dns_records(ctx).boxed(),
    max_attempts: 8,
};

pub const DELETE_KEY_MATERIAL: Step = Step {
    name: "delete_key_material",
    description: "Deleting certificates and private keys",
    run: |ctx| delete_key_material(ctx).boxed(),
    max_attempts: 8,
};

pub const DEPROVISION: &[Step] = &[REMOVE_DNS_RECORDS, DELETE_KEY_MATERIAL];

/// Removes every record listed in `dns_records` for the instance.
pub async fn remove_dns_records(ctx: StepContext) -> StepResult {
    let id = ctx.instance.id.clone();
    let records = ctx
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::dns_records_of(c, &id).await }))
        .await?;
    let forget = super::certificate::remove_records(&ctx, records).await?;
    Ok(StepOutcome::recording(forget))
}

async fn delete_key_material(ctx: StepContext) -> StepResult {
    let id = ctx.instance.id.clone();
    Ok(StepOutcome::DoneRecording(Box::new(move |c| {
        Box::pin(async move { queries::delete_key_material(c, &id).await })
    })))
}
