//! Bindings: a `certificate` instance hands out its current certificate and
//! key, synchronously.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::request::{
    json_object, known_plan, optional_object, optional_str, query, required_param, required_str,
};
use super::{ApiVersion, AppState, OsbError};
use crate::actors::{Bind, BindOutcome, BrokerError, Unbind};
use crate::db::models::{BindingRow, instance_state};
use crate::db::queries;
use crate::domain::{DomainList, ParameterError, renew_at};

type Path = web::Path<(String, String)>;

async fn render(
    state: &AppState,
    binding: &BindingRow,
    version: ApiVersion,
) -> Result<Value, OsbError> {
    let cert_id = binding.certificate_id.clone();
    let cert = state
        .deps
        .store
        .read(move |c| Box::pin(async move { queries::certificate(c, &cert_id).await }))
        .await?
        .ok_or_else(|| {
            BrokerError::Internal(format!("certificate {} is missing", binding.certificate_id))
        })?;
    let (Some(leaf), Some(key), Some(expires), Some(issued)) = (
        &cert.leaf_pem,
        &cert.private_key_encrypted,
        cert.expires_at,
        cert.issued_at,
    ) else {
        return Err(
            BrokerError::Internal(format!("certificate {} is not complete", cert.id)).into(),
        );
    };
    let key = state
        .deps
        .cipher
        .decrypt(key)
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let expires_at = DateTime::<Utc>::from_naive_utc_and_offset(expires, Utc);
    // By then the broker has renewed it: its sweep finds the certificate due
    // within one check interval, starts within the jitter, and an hour is
    // ample to issue. A binding fetched after this gets the new certificate.
    let renewal = &state.deps.config.renewal;
    let settled = chrono::Duration::from_std(renewal.check_interval + renewal.jitter)
        .unwrap_or_default()
        + chrono::Duration::hours(1);
    let renew_before = DateTime::<Utc>::from_naive_utc_and_offset(
        (renew_at(issued, expires, renewal.renew_before_days) + settled).min(expires),
        Utc,
    );
    let chain = cert.chain_pem.clone().unwrap_or_default();
    let mut body = json!({
        "credentials": {
            "certificate": format!("{}{}", leaf, chain),
            "private_key": String::from_utf8_lossy(&key),
            "domains": DomainList::from_stored(&cert.domains).map(|d| d.names().iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    });
    if version.at_least(16) {
        body["metadata"] =
            json!({"expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
        if version.at_least(17) {
            body["metadata"]["renew_before"] =
                json!(renew_before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    Ok(body)
}

pub async fn bind(
    state: web::Data<AppState>,
    path: Path,
    body: web::Bytes,
    version: ApiVersion,
) -> Result<HttpResponse, OsbError> {
    let (instance_id, binding_id) = path.into_inner();
    let body = json_object(&body)?;
    let service_id = required_str(&body, "service_id")?;
    let plan_id = required_str(&body, "plan_id")?;
    known_plan(service_id, plan_id)?;
    let bind_resource = optional_object(&body, "bind_resource")?;
    let app_guid = optional_str(&body, "app_guid")?
        .or_else(|| {
            bind_resource
                .and_then(|r| r.get("app_guid"))
                .and_then(Value::as_str)
        })
        .map(str::to_string);
    let parameters = optional_object(&body, "parameters")?
        .cloned()
        .unwrap_or_default();
    if !parameters.is_empty() {
        let mut names: Vec<&str> = parameters.keys().map(String::as_str).collect();
        names.sort_unstable();
        return Err(OsbError::bad_request(
            ParameterError::Unknown {
                unknown: names.join(", "),
                allowed: "none".into(),
            }
            .to_string(),
        ));
    }
    let live = state
        .deps
        .store
        .read({
            let id = instance_id.clone();
            move |c| Box::pin(async move { queries::instance(c, &id).await })
        })
        .await?
        .is_some_and(|i| i.state != instance_state::DEPROVISIONED);
    if !live {
        return Err(OsbError::new(
            StatusCode::NOT_FOUND,
            "No such service instance.",
        ));
    }
    let bind = Bind {
        binding_id,
        service_id: service_id.to_string(),
        plan_id: plan_id.to_string(),
        app_guid,
        bind_resource: bind_resource.map(|r| Value::Object(r.clone())),
        parameters: Value::Object(parameters),
    };
    let (status, binding) = match state.ask(&instance_id, bind).await? {
        BindOutcome::Created(b) => (StatusCode::CREATED, b),
        BindOutcome::Exists(b) => (StatusCode::OK, b),
    };
    Ok(HttpResponse::build(status).json(render(&state, &binding, version).await?))
}

async fn read_binding(
    state: &AppState,
    instance_id: &str,
    binding_id: &str,
) -> Result<Option<BindingRow>, OsbError> {
    let (instance_id, binding_id) = (instance_id.to_string(), binding_id.to_string());
    Ok(state
        .deps
        .store
        .read(move |c| {
            Box::pin(async move {
                let binding = queries::binding(c, &binding_id).await?;
                let live = queries::instance(c, &instance_id)
                    .await?
                    .is_some_and(|i| i.state != instance_state::DEPROVISIONED);
                Ok(binding.filter(|b| live && b.instance_id == instance_id))
            })
        })
        .await?)
}

pub async fn fetch(
    state: web::Data<AppState>,
    path: Path,
    version: ApiVersion,
) -> Result<HttpResponse, OsbError> {
    let (instance_id, binding_id) = path.into_inner();
    let binding = read_binding(&state, &instance_id, &binding_id)
        .await?
        .ok_or_else(|| OsbError::new(StatusCode::NOT_FOUND, "No such service binding."))?;
    Ok(HttpResponse::Ok().json(render(&state, &binding, version).await?))
}

pub async fn unbind(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: Path,
) -> Result<HttpResponse, OsbError> {
    let (instance_id, binding_id) = path.into_inner();
    let query = query(&req)?;
    known_plan(
        required_param(&query, "service_id")?,
        required_param(&query, "plan_id")?,
    )?;
    if read_binding(&state, &instance_id, &binding_id)
        .await?
        .is_none()
    {
        return Err(OsbError::gone());
    }
    state.ask(&instance_id, Unbind { binding_id }).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

pub async fn last_operation(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: Path,
) -> Result<HttpResponse, OsbError> {
    let (instance_id, binding_id) = path.into_inner();
    query(&req)?;
    match read_binding(&state, &instance_id, &binding_id).await? {
        Some(_) => Ok(HttpResponse::Ok()
            .json(json!({"state": "succeeded", "description": "The binding is ready."}))),
        None => Err(OsbError::gone()),
    }
}
