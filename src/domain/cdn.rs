//! The `domain-with-cdn` plan's parameters, parsed into the settings of a
//! CloudFront distribution, with the original broker's rules and messages.

use serde_json::{Map, Value};

/// HTTP status codes whose error page a user may replace.
pub const ERROR_CODES: &[&str] = &[
    "400", "403", "404", "405", "414", "416", "500", "501", "502", "503", "504",
];

/// The managed cache policies a user may pick, by the names
/// `ListCachePolicies` gives them, with their ids (the same in every
/// account; moto has no cache-policy API to look them up).
pub const CACHE_POLICIES: &[(&str, &str)] = &[
    (
        "Managed-CachingDisabled",
        "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
    ),
    (
        "Managed-CachingOptimized",
        "658327ea-f89d-4fab-a63d-7e88639e58f6",
    ),
    (
        "Managed-CachingOptimizedForUncompressedObjects",
        "b2884449-e4de-46a7-ac36-70bc7f1ddd6d",
    ),
    (
        "UseOriginCacheControlHeaders",
        "83da9c7e-98b4-4e11-a168-04f0df8e2c65",
    ),
    (
        "UseOriginCacheControlHeaders-QueryStrings",
        "4cc15a8a-d715-48a4-82b8-cc0b614638fe",
    ),
];

pub const ORIGIN_REQUEST_POLICIES: &[(&str, &str)] = &[
    ("Managed-AllViewer", "216adef6-5c7f-47e4-b989-5492eafa07d3"),
    (
        "Managed-AllViewerAndCloudFrontHeaders-2022-06",
        "33f36d7e-f396-46d9-90e0-52428a34d9dc",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cookies {
    All,
    None,
    Only(Vec<String>),
}

/// What the distribution is made of, all defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdnSettings {
    pub origin: String,
    pub path: String,
    pub cookies: Cookies,
    /// Upper-cased, de-duplicated, sorted; HOST added for the default origin.
    pub headers: Vec<String>,
    pub insecure_origin: bool,
    /// (status code, page path), by code.
    pub error_responses: Vec<(String, String)>,
    pub cache_policy_id: Option<&'static str>,
    pub origin_request_policy_id: Option<&'static str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdnError {
    #[error("{0} is not a valid hostname")]
    InvalidOrigin(String),
    #[error("'{0}' must be a string.")]
    NotAString(&'static str),
    #[error("'path' must be empty or start with '/' and not end with '/', e.g. /app.")]
    InvalidPath,
    #[error("Headers cannot be empty")]
    EmptyHeader,
    #[error("Cookie names cannot be empty")]
    EmptyCookie,
    #[error(
        "'{0}' cannot be used with 'cache_policy': a cache policy decides what is \
         forwarded; use 'origin_request_policy' to forward more."
    )]
    ForwardedWithCachePolicy(&'static str),
    #[error("{header} contains these invalid characters: {invalid}")]
    InvalidHeader { header: String, invalid: String },
    #[error("'insecure_origin' must be true or false.")]
    InsecureOriginNotBool,
    #[error("'insecure_origin' cannot be set when using the default origin.")]
    InsecureDefaultOrigin,
    #[error("error_response should be a dictionary of error code: response path")]
    ErrorResponsesNotAnObject,
    #[error("error_response keys must be strings")]
    ErrorResponseCode,
    #[error("error_response values must be strings")]
    ErrorResponseNotAString,
    #[error("error_response values must not be empty")]
    ErrorResponseEmpty,
    #[error("error_response path must be a path starting with `/`")]
    ErrorResponsePath,
    #[error("'{0}' is not an allowed value for cache_policy.")]
    CachePolicy(String),
    #[error("'{0}' is not an allowed value for origin_request_policy.")]
    OriginRequestPolicy(String),
}

impl CdnSettings {
    /// Reads the instance's parameters (on update: the stored ones with the
    /// given ones laid over them). An absent or empty `origin` is the
    /// platform's default origin.
    pub fn parse(parameters: &Map<String, Value>, default_origin: &str) -> Result<Self, CdnError> {
        let text = |name: &'static str| -> Result<Option<&str>, CdnError> {
            match parameters.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(CdnError::NotAString(name)),
            }
        };
        let origin = match text("origin")?.map(str::trim).filter(|s| !s.is_empty()) {
            None => default_origin.to_string(),
            Some(o) if valid_hostname(o) => o.to_ascii_lowercase(),
            Some(o) => return Err(CdnError::InvalidOrigin(o.to_string())),
        };
        let is_default = origin == default_origin;
        let path = text("path")?.unwrap_or("").trim().to_string();
        if !path.is_empty() && (!path.starts_with('/') || path.ends_with('/')) {
            return Err(CdnError::InvalidPath);
        }
        let cookies = match text("forward_cookies")?.map(|s| s.replace(' ', "")) {
            None => Cookies::All,
            Some(s) if s.is_empty() => Cookies::None,
            Some(s) if s == "*" => Cookies::All,
            Some(s) => {
                let names: Vec<String> = s.split(',').map(str::to_string).collect();
                if names.iter().any(String::is_empty) {
                    return Err(CdnError::EmptyCookie);
                }
                Cookies::Only(names)
            }
        };
        let mut headers = match text("forward_headers")?.map(|s| s.replace(' ', "")) {
            None => Vec::new(),
            Some(s) => header_list(&s)?,
        };
        if is_default {
            headers.push("HOST".into());
        }
        for h in &mut headers {
            *h = h.to_ascii_uppercase();
        }
        headers.sort();
        headers.dedup();
        let insecure_origin = match parameters.get("insecure_origin") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(CdnError::InsecureOriginNotBool),
        };
        if insecure_origin && is_default {
            return Err(CdnError::InsecureDefaultOrigin);
        }
        let error_responses = match parameters.get("error_responses") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => error_responses(v)?,
        };
        let policy = |name: &'static str,
                      allowed: &'static [(&'static str, &'static str)],
                      err: fn(String) -> CdnError| {
            match text(name)?.filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(p) => allowed
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, id)| Some(*id))
                    .ok_or_else(|| err(p.to_string())),
            }
        };
        let cache_policy_id = policy("cache_policy", CACHE_POLICIES, CdnError::CachePolicy)?;
        let mut origin_request_policy_id = policy(
            "origin_request_policy",
            ORIGIN_REQUEST_POLICIES,
            CdnError::OriginRequestPolicy,
        )?;
        if cache_policy_id.is_some() {
            for name in ["forward_cookies", "forward_headers"] {
                if text(name)?.is_some() {
                    return Err(CdnError::ForwardedWithCachePolicy(name));
                }
            }
            // The platform's router needs the Host header, which a cache
            // policy alone does not forward.
            if is_default && origin_request_policy_id.is_none() {
                origin_request_policy_id = Some(ORIGIN_REQUEST_POLICIES[0].1);
            }
        }
        Ok(CdnSettings {
            origin,
            path,
            cookies,
            headers,
            insecure_origin,
            error_responses,
            cache_policy_id,
            origin_request_policy_id,
        })
    }
}

/// At least two labels of letters, digits and inner hyphens, the last of
/// two characters or more; 253 characters at most.
fn valid_hostname(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.last().is_some_and(|tld| tld.len() >= 2)
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// RFC 7230 header names (tokens), comma-separated.
fn header_list(value: &str) -> Result<Vec<String>, CdnError> {
    const SPECIAL: &str = "!#$%&'*+-.^_`|~";
    value
        .split(',')
        .map(|h| {
            if h.is_empty() {
                return Err(CdnError::EmptyHeader);
            }
            let mut invalid: Vec<char> = h
                .chars()
                .filter(|c| !c.is_ascii_alphanumeric() && !SPECIAL.contains(*c))
                .collect();
            invalid.dedup();
            if invalid.is_empty() {
                Ok(h.to_string())
            } else {
                Err(CdnError::InvalidHeader {
                    header: h.to_string(),
                    invalid: invalid.into_iter().collect(),
                })
            }
        })
        .collect()
}

fn error_responses(value: &Value) -> Result<Vec<(String, String)>, CdnError> {
    let map = value
        .as_object()
        .ok_or(CdnError::ErrorResponsesNotAnObject)?;
    let mut out = Vec::with_capacity(map.len());
    for (code, page) in map {
        if !ERROR_CODES.contains(&code.as_str()) {
            return Err(CdnError::ErrorResponseCode);
        }
        let page = page.as_str().ok_or(CdnError::ErrorResponseNotAString)?;
        if page.is_empty() {
            return Err(CdnError::ErrorResponseEmpty);
        }
        if !page.starts_with('/') {
            return Err(CdnError::ErrorResponsePath);
        }
        out.push((code.clone(), page.to_string()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULT: &str = "apps.example.gov";

    fn parse(v: Value) -> Result<CdnSettings, CdnError> {
        CdnSettings::parse(v.as_object().unwrap(), DEFAULT)
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = parse(json!({"domains": "a.example.com"})).unwrap();
        assert_eq!(s.origin, DEFAULT);
        assert_eq!(s.cookies, Cookies::All);
        assert_eq!(s.headers, vec!["HOST"]);
        assert!(!s.insecure_origin);
        assert!(s.error_responses.is_empty());
        assert_eq!(s.cache_policy_id, None);
    }

    #[test]
    fn headers_are_normalized_and_host_added_only_for_the_default_origin() {
        let s = parse(json!({"forward_headers": "x-b, X-A,x-b"})).unwrap();
        assert_eq!(s.headers, vec!["HOST", "X-A", "X-B"]);
        let s = parse(json!({"origin": "my.app.example", "forward_headers": "x-a"})).unwrap();
        assert_eq!(s.headers, vec!["X-A"]);
        assert_eq!(
            parse(json!({"forward_headers": "a,,b"})),
            Err(CdnError::EmptyHeader)
        );
        assert_eq!(
            parse(json!({"forward_headers": "x-a,b(ad)"}))
                .unwrap_err()
                .to_string(),
            "b(ad) contains these invalid characters: ()"
        );
    }

    #[test]
    fn cookies() {
        let cookies = |v: &str| parse(json!({"forward_cookies": v})).unwrap().cookies;
        assert_eq!(cookies(""), Cookies::None);
        assert_eq!(cookies("*"), Cookies::All);
        assert_eq!(cookies("a, b"), Cookies::Only(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn origin_and_insecure_origin() {
        assert_eq!(
            parse(json!({"origin": "not_a_host"}))
                .unwrap_err()
                .to_string(),
            "not_a_host is not a valid hostname"
        );
        assert_eq!(
            parse(json!({"origin": "localhost"})),
            Err(CdnError::InvalidOrigin("localhost".into()))
        );
        assert_eq!(
            parse(json!({"insecure_origin": true}))
                .unwrap_err()
                .to_string(),
            "'insecure_origin' cannot be set when using the default origin."
        );
        let s = parse(json!({"origin": "Old.App.example", "insecure_origin": true})).unwrap();
        assert_eq!(
            (s.origin.as_str(), s.insecure_origin),
            ("old.app.example", true)
        );
        assert_eq!(
            parse(json!({"insecure_origin": "yes"})),
            Err(CdnError::InsecureOriginNotBool)
        );
    }

    #[test]
    fn error_responses_follow_the_originals_rules() {
        let s = parse(json!({"error_responses": {"404": "/404.html", "500": "/oops"}})).unwrap();
        assert_eq!(
            s.error_responses,
            vec![
                ("404".into(), "/404.html".into()),
                ("500".into(), "/oops".into())
            ]
        );
        for (value, error) in [
            (json!([]), CdnError::ErrorResponsesNotAnObject),
            (json!({"200": "/x"}), CdnError::ErrorResponseCode),
            (json!({"404": 1}), CdnError::ErrorResponseNotAString),
            (json!({"404": ""}), CdnError::ErrorResponseEmpty),
            (json!({"404": "x.html"}), CdnError::ErrorResponsePath),
        ] {
            assert_eq!(parse(json!({"error_responses": value})), Err(error));
        }
    }

    #[test]
    fn policies_by_managed_name() {
        let s = parse(json!({"cache_policy": "Managed-CachingDisabled", "origin_request_policy": "Managed-AllViewer"})).unwrap();
        assert_eq!(
            s.cache_policy_id,
            Some("4135ea2d-6df8-44a3-9df3-4b5a84be39ad")
        );
        assert_eq!(
            s.origin_request_policy_id,
            Some("216adef6-5c7f-47e4-b989-5492eafa07d3")
        );
        assert_eq!(
            parse(json!({"cache_policy": "CachingFast"}))
                .unwrap_err()
                .to_string(),
            "'CachingFast' is not an allowed value for cache_policy."
        );
        assert_eq!(
            parse(json!({"origin_request_policy": "All"}))
                .unwrap_err()
                .to_string(),
            "'All' is not an allowed value for origin_request_policy."
        );
    }

    #[test]
    fn a_cache_policy_replaces_forwarded_values() {
        let s = parse(json!({"cache_policy": "Managed-CachingOptimized"})).unwrap();
        assert_eq!(
            s.origin_request_policy_id,
            Some("216adef6-5c7f-47e4-b989-5492eafa07d3"),
            "the default origin gets its Host header"
        );
        let s =
            parse(json!({"origin": "my.app.example", "cache_policy": "Managed-CachingOptimized"}))
                .unwrap();
        assert_eq!(s.origin_request_policy_id, None);
        assert_eq!(
            parse(json!({"cache_policy": "Managed-CachingOptimized", "forward_headers": "x-a"})),
            Err(CdnError::ForwardedWithCachePolicy("forward_headers"))
        );
        assert_eq!(
            parse(json!({"forward_cookies": "a,"})),
            Err(CdnError::EmptyCookie)
        );
    }

    #[test]
    fn path_and_types() {
        assert_eq!(parse(json!({"path": "/app"})).unwrap().path, "/app");
        assert_eq!(parse(json!({"path": "app/"})), Err(CdnError::InvalidPath));
        assert_eq!(parse(json!({"path": 3})), Err(CdnError::NotAString("path")));
    }
}
