//! The one service and its plans, with the original broker's ids.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::domain::Plan;

pub const SERVICE_ID: &str = "8c16de31-104a-47b0-ba79-25e747be91d6";
pub const SERVICE_NAME: &str = "external-domain";

pub struct PlanInfo {
    pub plan: Plan,
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub bindable: bool,
    pub maximum_polling_duration: u32,
}

pub const PLANS: &[PlanInfo] = &[
    PlanInfo {
        plan: Plan::DomainWithCdn,
        id: "1cc78b0c-c296-48f5-9182-0b38404f79ef",
        name: "domain-with-cdn",
        description: "Custom domain with a TLS certificate, served through a CloudFront CDN",
        bindable: false,
        maximum_polling_duration: 7200,
    },
    PlanInfo {
        plan: Plan::Domain,
        id: "6f60835c-8964-4f1f-a19a-579fb27ce694",
        name: "domain",
        description: "Custom domain with a TLS certificate on the platform's load balancer",
        bindable: false,
        maximum_polling_duration: 3600,
    },
    PlanInfo {
        plan: Plan::Certificate,
        id: "2fd4db4f-9a61-4f5f-8ecc-4457bd823d61",
        name: "certificate",
        description: "A TLS certificate for your domains, renewed automatically; \
                      bind it to receive the certificate and key",
        bindable: true,
        maximum_polling_duration: 3600,
    },
];

pub fn plan_by_id(id: &str) -> Option<&'static PlanInfo> {
    PLANS.iter().find(|p| p.id == id)
}

pub fn plan_info(plan: Plan) -> &'static PlanInfo {
    PLANS
        .iter()
        .find(|p| p.plan == plan)
        .expect("every plan is in the catalog")
}

fn parameters_schema(plan: Plan, for_update: bool) -> Value {
    let domains = json!({
        "description": "Your domains, as a comma-separated string or an array. \
                        Each needs the CNAME _acme-challenge.<domain> described in the README.",
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string"}, "minItems": 1}
        ]
    });
    let mut properties = serde_json::Map::new();
    properties.insert("domains".into(), domains);
    if plan == Plan::DomainWithCdn {
        for (name, schema) in [
            ("origin", json!({"type": "string"})),
            ("path", json!({"type": "string"})),
            ("forward_cookies", json!({"type": "string"})),
            ("forward_headers", json!({"type": "string"})),
            ("insecure_origin", json!({"type": "boolean"})),
            ("error_responses", json!({"type": "object"})),
            ("cache_policy", json!({"type": "string"})),
            ("origin_request_policy", json!({"type": "string"})),
        ] {
            properties.insert(name.into(), schema);
        }
    }
    let mut schema = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !for_update {
        schema["required"] = json!(["domains"]);
    }
    json!({"parameters": schema})
}

/// The catalog as a platform speaking API `2.<minor>` should see it: fields
/// introduced after that version are left out.
pub fn catalog_json(minor: u32) -> Value {
    let plans: Vec<Value> = PLANS
        .iter()
        .map(|p| {
            let mut plan = json!({
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "free": true,
                "bindable": p.bindable,
                "metadata": {"displayName": p.name},
                "schemas": {
                    "service_instance": {
                        "create": parameters_schema(p.plan, false),
                        "update": parameters_schema(p.plan, true),
                    }
                },
            });
            if minor >= 15 {
                plan["plan_updateable"] = json!(false);
                plan["maximum_polling_duration"] = json!(p.maximum_polling_duration);
            }
            plan
        })
        .collect();
    json!({
        "services": [{
            "id": SERVICE_ID,
            "name": SERVICE_NAME,
            "description": "Custom domains with TLS certificates from Let's Encrypt, \
                            optionally served through a CDN or load balancer",
            "bindable": false,
            "plan_updateable": false,
            "instances_retrievable": true,
            "bindings_retrievable": true,
            "tags": ["domain", "tls", "certificate", "acme", "cdn"],
            "metadata": {
                "displayName": "External domain",
                "longDescription": "Use your own domain names with TLS certificates \
                                    that are issued and renewed automatically.",
                "providerDisplayName": "domain-broker",
            },
            "plans": plans,
        }]
    })
}

/// Serialized once per API minor version: the catalog never changes while
/// the broker runs.
static RENDERED: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    (0..=MAX_MINOR)
        .map(|minor| serde_json::to_vec(&catalog_json(minor)).expect("catalog serializes"))
        .collect()
});
const MAX_MINOR: u32 = 17;

pub fn catalog_bytes(minor: u32) -> &'static [u8] {
    &RENDERED[minor.min(MAX_MINOR) as usize]
}

/// Start-up check: unique ids and names, at least one plan per service.
pub fn validate(catalog: &Value) -> Result<(), String> {
    let services = catalog["services"]
        .as_array()
        .ok_or("catalog has no services")?;
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    for service in services {
        let plans = service["plans"].as_array().filter(|p| !p.is_empty());
        let plans = plans.ok_or_else(|| format!("service {} has no plans", service["name"]))?;
        for item in std::iter::once(service).chain(plans) {
            let id = item["id"].as_str().ok_or("an id is missing")?;
            if !ids.insert(id.to_string()) {
                return Err(format!("duplicate id {id}"));
            }
        }
        if !names.insert(service["name"].to_string()) {
            return Err(format!("duplicate service name {}", service["name"]));
        }
        let mut plan_names = HashSet::new();
        for plan in plans {
            if !plan_names.insert(plan["name"].to_string()) {
                return Err(format!("duplicate plan name {}", plan["name"]));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_valid_and_versioned() {
        validate(&catalog_json(17)).unwrap();
        let old = catalog_json(13);
        assert!(
            old["services"][0]["plans"][0]
                .get("maximum_polling_duration")
                .is_none()
        );
        let new = catalog_json(17);
        assert_eq!(new["services"][0]["plans"][2]["bindable"], true);
        assert_eq!(new["services"][0]["plans"][0]["plan_updateable"], false);
    }

    #[test]
    fn validation_catches_duplicates() {
        let mut c = catalog_json(17);
        c["services"][0]["plans"][1]["id"] = c["services"][0]["plans"][0]["id"].clone();
        assert!(validate(&c).unwrap_err().contains("duplicate id"));
        let mut c = catalog_json(17);
        c["services"][0]["plans"] = json!([]);
        assert!(validate(&c).is_err());
    }
}
