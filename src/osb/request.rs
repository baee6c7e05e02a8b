//! Parsing of request bodies and query strings into plain values, with
//! messages that name the field at fault.

use std::collections::HashMap;

use actix_web::HttpRequest;
use serde_json::{Map, Value};

use super::OsbError;

pub type Query = HashMap<String, String>;

pub fn query(req: &HttpRequest) -> Result<Query, OsbError> {
    actix_web::web::Query::<Query>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| OsbError::bad_request(format!("The query string is malformed: {e}")))
}

/// `accepts_incomplete=true` is required by every asynchronous operation.
pub fn require_async(query: &Query) -> Result<(), OsbError> {
    match query.get("accepts_incomplete").map(String::as_str) {
        Some("true") => Ok(()),
        _ => Err(OsbError::async_required()),
    }
}

/// A non-empty query parameter, as DELETE requires `service_id` and `plan_id`.
pub fn required_param<'q>(query: &'q Query, name: &str) -> Result<&'q str, OsbError> {
    query
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| OsbError::bad_request(format!("The query parameter '{name}' is required.")))
}

pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, OsbError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(OsbError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(OsbError::bad_request(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

pub fn optional_str<'b>(
    body: &'b Map<String, Value>,
    name: &str,
) -> Result<Option<&'b str>, OsbError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OsbError::bad_request(format!("'{name}' must be a string."))),
    }
}

pub fn required_str<'b>(body: &'b Map<String, Value>, name: &str) -> Result<&'b str, OsbError> {
    optional_str(body, name)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| OsbError::bad_request(format!("'{name}' is required.")))
}

pub fn optional_object<'b>(
    body: &'b Map<String, Value>,
    name: &str,
) -> Result<Option<&'b Map<String, Value>>, OsbError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(OsbError::bad_request(format!(
            "'{name}' must be a JSON object."
        ))),
    }
}

/// The plan a request names, which must belong to our one service.
pub fn known_plan(
    service_id: &str,
    plan_id: &str,
) -> Result<&'static crate::catalog::PlanInfo, OsbError> {
    if service_id != crate::catalog::SERVICE_ID {
        return Err(OsbError::bad_request(format!(
            "Unknown service_id '{service_id}': this broker offers only '{}' ({}).",
            crate::catalog::SERVICE_NAME,
            crate::catalog::SERVICE_ID
        )));
    }
    crate::catalog::plan_by_id(plan_id).ok_or_else(|| {
        OsbError::bad_request(format!(
            "Unknown plan_id '{plan_id}' for service '{}'.",
            crate::catalog::SERVICE_NAME
        ))
    })
}
