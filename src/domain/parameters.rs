use serde_json::{Map, Value};

use super::{DomainName, InvalidDomainName, Plan};

/// What Let's Encrypt puts in one certificate at most.
pub const MAX_DOMAINS: usize = 100;

/// The domains of an instance: de-duplicated, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainList(Vec<DomainName>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParameterError {
    #[error("'parameters' must be a JSON object.")]
    NotAnObject,
    #[error("'domains' parameter required.")]
    DomainsRequired,
    #[error("'domains' must be a comma-separated string or an array of strings.")]
    DomainsWrongType,
    #[error("{0}")]
    InvalidDomain(#[from] InvalidDomainName),
    #[error("At most {MAX_DOMAINS} domains fit in one certificate; {0} were given.")]
    TooManyDomains(usize),
    #[error("Unknown parameter(s) for this plan: {unknown}. Allowed: {allowed}.")]
    Unknown { unknown: String, allowed: String },
}

impl DomainList {
    pub fn new(domains: Vec<DomainName>) -> DomainList {
        let mut unique: Vec<DomainName> = Vec::with_capacity(domains.len());
        for d in domains {
            if !unique.contains(&d) {
                unique.push(d);
            }
        }
        DomainList(unique)
    }

    /// `"a.com, b.com"` or `["a.com", "b.com"]`.
    pub fn from_json(value: &Value) -> Result<DomainList, ParameterError> {
        let raw: Vec<&str> = match value {
            Value::String(s) => s.split(',').collect(),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().ok_or(ParameterError::DomainsWrongType))
                .collect::<Result<_, _>>()?,
            _ => return Err(ParameterError::DomainsWrongType),
        };
        let names: Vec<DomainName> = raw
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .map(DomainName::parse)
            .collect::<Result<_, _>>()?;
        if names.is_empty() {
            return Err(ParameterError::DomainsRequired);
        }
        let list = DomainList::new(names);
        if list.len() > MAX_DOMAINS {
            return Err(ParameterError::TooManyDomains(list.len()));
        }
        Ok(list)
    }

    /// Reads back what `to_json` stored.
    pub fn from_stored(text: &str) -> Option<DomainList> {
        let names: Vec<String> = serde_json::from_str(text).ok()?;
        names
            .iter()
            .map(|n| DomainName::parse(n).ok())
            .collect::<Option<Vec<_>>>()
            .map(DomainList)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.names()).expect("strings serialize")
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(DomainName::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &DomainName> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The parameters of a provision or update, parsed for one plan. On update
/// an absent parameter is `None`: left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionParameters {
    pub domains: Option<DomainList>,
}

impl ProvisionParameters {
    pub fn parse(plan: Plan, parameters: Option<&Value>) -> Result<Self, ParameterError> {
        let empty = Map::new();
        let object = match parameters {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(map)) => map,
            Some(_) => return Err(ParameterError::NotAnObject),
        };
        let allowed = allowed_parameters(plan);
        let mut unknown: Vec<&str> = object
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(ParameterError::Unknown {
                unknown: unknown.join(", "),
                allowed: allowed.join(", "),
            });
        }
        let domains = object
            .get("domains")
            .map(DomainList::from_json)
            .transpose()?;
        Ok(ProvisionParameters { domains })
    }
}

fn allowed_parameters(plan: Plan) -> &'static [&'static str] {
    match plan {
        Plan::Certificate | Plan::Domain => &["domains"],
        Plan::DomainWithCdn => &[
            "domains",
            "origin",
            "path",
            "forward_cookies",
            "forward_headers",
            "insecure_origin",
            "error_responses",
            "cache_policy",
            "origin_request_policy",
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ProvisionParameters, ParameterError> {
        ProvisionParameters::parse(Plan::Certificate, Some(&v))
    }

    #[test]
    fn domains_as_string_or_array() {
        let p = parse(json!({"domains": " A.example.com, b.example.com ,a.example.com"})).unwrap();
        assert_eq!(
            p.domains.unwrap().names(),
            ["a.example.com", "b.example.com"]
        );
        let p = parse(json!({"domains": ["x.example.com"]})).unwrap();
        assert_eq!(p.domains.unwrap().names(), ["x.example.com"]);
    }

    #[test]
    fn bad_domains_are_named() {
        assert_eq!(
            parse(json!({"domains": ""})),
            Err(ParameterError::DomainsRequired)
        );
        assert_eq!(
            parse(json!({"domains": 5})),
            Err(ParameterError::DomainsWrongType)
        );
        assert_eq!(
            parse(json!({"domains": [1]})),
            Err(ParameterError::DomainsWrongType)
        );
        let err = parse(json!({"domains": "ok.example.com,bad_name.example.com"})).unwrap_err();
        assert!(err.to_string().contains("bad_name.example.com"), "{err}");
        let err = parse(json!({"domains": "a.example.com", "origin": "x", "zzz": 1})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unknown parameter(s) for this plan: origin, zzz. Allowed: domains."
        );
        assert_eq!(parse(json!([1])), Err(ParameterError::NotAnObject));
        let many: Vec<String> = (0..101).map(|i| format!("d{i}.example.com")).collect();
        assert_eq!(
            parse(json!({"domains": many})),
            Err(ParameterError::TooManyDomains(101))
        );
    }
}
