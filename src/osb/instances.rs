//! Service instance endpoints: provision, fetch, update, deprovision, poll.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::request::{
    json_object, known_plan, optional_object, optional_str, query, require_async, required_param,
    required_str,
};
use super::{ApiVersion, AppState, OsbError};
use crate::actors::instance::{ProvisionRequest, domains_taken};
use crate::actors::{Deprovision, Provision, ProvisionOutcome, Update, UpdateOutcome};
use crate::db::models::{InstanceRow, OperationStatus, instance_state, operation_state};
use crate::db::queries;
use crate::domain::{Action, CdnSettings, DomainList, ParameterError, Plan, ProvisionParameters};

async fn read_instance(state: &AppState, id: &str) -> Result<Option<InstanceRow>, OsbError> {
    let id = id.to_string();
    Ok(state
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::instance(c, &id).await }))
        .await?
        .filter(|i| i.state != instance_state::DEPROVISIONED))
}

/// Refuses domains another instance holds, or whose `_acme-challenge`
/// CNAME is not in place, with a message that says what to fix.
async fn check_domains(
    state: &AppState,
    instance_id: &str,
    domains: &DomainList,
) -> Result<(), OsbError> {
    let id = instance_id.to_string();
    let names: Vec<String> = domains.names().iter().map(|s| s.to_string()).collect();
    let taken = state
        .deps
        .store
        .read(move |c| {
            Box::pin(async move {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                queries::domains_held_by_others(c, &id, &names).await
            })
        })
        .await?;
    if !taken.is_empty() {
        return Err(domains_taken(&taken).into());
    }
    state
        .deps
        .cname
        .check(domains)
        .await
        .map_err(OsbError::bad_request)
}

/// A CDN's settings as they will be, checked before anything is stored.
fn check_cdn_settings(state: &AppState, plan: Plan, parameters: &Value) -> Result<(), OsbError> {
    if plan != Plan::DomainWithCdn {
        return Ok(());
    }
    let default_origin = state
        .deps
        .config
        .aws
        .default_cloudfront_origin
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    let empty = serde_json::Map::new();
    CdnSettings::parse(parameters.as_object().unwrap_or(&empty), &default_origin)
        .map(|_| ())
        .map_err(|e| OsbError::bad_request(e.to_string()))
}

fn parameter_error(e: ParameterError) -> OsbError {
    OsbError::bad_request(e.to_string())
}

/// The request's `parameters`, `{}` when absent.
fn parameters_of(
    body: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>, OsbError> {
    Ok(optional_object(body, "parameters")?
        .cloned()
        .unwrap_or_default())
}

pub async fn provision(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OsbError> {
    let id = path.into_inner();
    require_async(&query(&req)?)?;
    let body = json_object(&body)?;
    let service_id = required_str(&body, "service_id")?;
    let plan_id = required_str(&body, "plan_id")?;
    let context = optional_object(&body, "context")?;
    let from_context = |name: &str| {
        context
            .and_then(|c| c.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let guid = |name: &'static str| -> Result<String, OsbError> {
        optional_str(&body, name)?
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .or_else(|| from_context(name))
            .ok_or_else(|| OsbError::bad_request(format!("'{name}' is required.")))
    };
    let organization_guid = guid("organization_guid")?;
    let space_guid = guid("space_guid")?;
    let parameters = Value::Object(parameters_of(&body)?);
    let plan = known_plan(service_id, plan_id)?;
    let mut request = ProvisionRequest {
        plan: plan.plan,
        service_id: service_id.to_string(),
        plan_id: plan_id.to_string(),
        organization_guid,
        space_guid,
        context: context.map(|c| Value::Object(c.clone())),
        parameters,
        domains: DomainList::new(vec![]),
    };
    // A conflict with an existing instance is decided before anything
    // plan-specific; an identical repeat goes straight to the instance.
    let existing = read_instance(&state, &id).await?;
    if existing.is_none() {
        let missing = state.deps.config.aws.missing_for(plan.plan);
        if !missing.is_empty() {
            return Err(OsbError::bad_request(format!(
                "The '{}' plan is not set up on this broker: its operator has not set {}. \
                 Ask them to, or use the 'certificate' plan.",
                plan.name,
                missing.join(" and ")
            )));
        }
        let parsed = ProvisionParameters::parse(plan.plan, Some(&request.parameters))
            .map_err(parameter_error)?;
        request.domains = parsed
            .domains
            .ok_or(ParameterError::DomainsRequired)
            .map_err(parameter_error)?;
        check_cdn_settings(&state, plan.plan, &request.parameters)?;
        check_domains(&state, &id, &request.domains).await?;
    } else if let Some(row) = &existing {
        request.domains =
            DomainList::from_stored(&row.domains).unwrap_or_else(|| DomainList::new(vec![]));
    }
    match state.ask(&id, Provision(request)).await? {
        ProvisionOutcome::Accepted { operation } => {
            Ok(HttpResponse::Accepted().json(json!({"operation": operation})))
        }
        ProvisionOutcome::AlreadyProvisioned => Ok(HttpResponse::Ok().json(json!({}))),
    }
}

pub async fn fetch(
    state: web::Data<AppState>,
    path: web::Path<String>,
    version: ApiVersion,
) -> Result<HttpResponse, OsbError> {
    let id = path.into_inner();
    let not_found = || OsbError::new(StatusCode::NOT_FOUND, "No such service instance.");
    let instance = read_instance(&state, &id)
        .await?
        .filter(|i| i.state != instance_state::PROVISIONING)
        .ok_or_else(not_found)?;
    let op = latest_operation(&state, &id).await?;
    if op
        .as_ref()
        .is_some_and(|o| o.in_progress() && o.kind == Action::Update.as_str())
    {
        return Err(OsbError::concurrency(
            "The instance is being updated; fetch it again when the update has finished.",
        ));
    }
    let parameters: Value = serde_json::from_str(&instance.parameters).unwrap_or(json!({}));
    let mut body = json!({
        "service_id": instance.service_id,
        "plan_id": instance.plan_id,
        "parameters": parameters,
    });
    if version.at_least(16) {
        body["metadata"] = json!({"labels": {}, "attributes": {"domains": DomainList::from_stored(&instance.domains).map(|d| d.names().join(",")).unwrap_or_default()}});
    }
    Ok(HttpResponse::Ok().json(body))
}

/// The instance's latest operation, as far as a handler needs it.
async fn latest_operation(state: &AppState, id: &str) -> Result<Option<OperationStatus>, OsbError> {
    let id = id.to_string();
    Ok(state
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::operation_status(c, &id, None).await }))
        .await?)
}

pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OsbError> {
    let id = path.into_inner();
    require_async(&query(&req)?)?;
    let body = json_object(&body)?;
    let service_id = required_str(&body, "service_id")?;
    let instance = read_instance(&state, &id)
        .await?
        .ok_or_else(|| OsbError::new(StatusCode::NOT_FOUND, "No such service instance."))?;
    let plan_id = optional_str(&body, "plan_id")?.unwrap_or(&instance.plan_id);
    let plan = known_plan(service_id, plan_id)?;
    if plan_id != instance.plan_id {
        return Err(OsbError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "The plan of an instance cannot be changed (to '{}'); create a new instance \
                 with the plan you want instead.",
                plan.name
            ),
        ));
    }
    let given = parameters_of(&body)?;
    let parsed = ProvisionParameters::parse(plan.plan, Some(&Value::Object(given.clone())))
        .map_err(parameter_error)?;
    let current = DomainList::from_stored(&instance.domains);
    let Some(domains) = parsed.domains.or_else(|| current.clone()) else {
        return Err(OsbError::bad_request(
            ParameterError::DomainsRequired.to_string(),
        ));
    };
    // Absent parameters keep their values; given ones replace them.
    let mut parameters: serde_json::Map<String, Value> =
        serde_json::from_str(&instance.parameters).unwrap_or_default();
    parameters.extend(given);
    let parameters = Value::Object(parameters);
    check_cdn_settings(&state, plan.plan, &parameters)?;
    if current.as_ref() != Some(&domains) {
        check_domains(&state, &id, &domains).await?;
    }
    let update = Update {
        domains,
        parameters,
    };
    match state.ask(&id, update).await? {
        UpdateOutcome::Accepted { operation } => {
            Ok(HttpResponse::Accepted().json(json!({"operation": operation})))
        }
        UpdateOutcome::Unchanged => Ok(HttpResponse::Ok().json(json!({}))),
    }
}

pub async fn deprovision(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, OsbError> {
    let id = path.into_inner();
    let query = query(&req)?;
    require_async(&query)?;
    known_plan(
        required_param(&query, "service_id")?,
        required_param(&query, "plan_id")?,
    )?;
    if read_instance(&state, &id).await?.is_none() {
        return Err(OsbError::gone());
    }
    let operation = state.ask(&id, Deprovision).await?;
    Ok(HttpResponse::Accepted().json(json!({"operation": operation})))
}

pub async fn last_operation(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    version: ApiVersion,
) -> Result<HttpResponse, OsbError> {
    let id = path.into_inner();
    let query = query(&req)?;
    if let (Some(service_id), Some(plan_id)) = (query.get("service_id"), query.get("plan_id")) {
        known_plan(service_id, plan_id)?;
    } else if let Some(service_id) = query.get("service_id") {
        known_plan(service_id, crate::catalog::PLANS[0].id)?;
    } else if let Some(plan_id) = query.get("plan_id") {
        known_plan(crate::catalog::SERVICE_ID, plan_id)?;
    }
    let wanted = query.get("operation").cloned();
    let instance_id = id.clone();
    // An unknown or literal operation ("provision") falls back to the
    // latest operation of the instance.
    let op = state
        .deps
        .store
        .read(move |c| {
            Box::pin(
                async move { queries::operation_status(c, &instance_id, wanted.as_deref()).await },
            )
        })
        .await?
        .ok_or_else(OsbError::gone)?;
    let mut body = json!({"state": op.state, "description": op.description});
    if op.state == operation_state::FAILED && version.at_least(16) {
        match Action::parse(&op.kind) {
            Some(Action::Update) => {
                body["instance_usable"] = json!(true);
                body["update_repeatable"] = json!(true);
            }
            Some(Action::Deprovision) => body["instance_usable"] = json!(false),
            _ => {}
        }
    }
    let mut response = HttpResponse::Ok();
    if op.in_progress() {
        response.insert_header(("Retry-After", "2"));
    }
    Ok(response.json(body))
}
