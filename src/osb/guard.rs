//! What every `/v2` request passes before a handler sees it, in the order
//! OSB asks: authentication, then the API version, then identity headers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, ResponseError, web};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::{AppState, OsbError};

pub const VERSION_HEADER: &str = "X-Broker-API-Version";
pub const REQUEST_IDENTITY: &str = "X-Broker-API-Request-Identity";
pub const ORIGINATING_IDENTITY: &str = "X-Broker-API-Originating-Identity";
pub const MIN_MINOR: u32 = 13;

/// The OSB API version the platform speaks: `2.<minor>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiVersion {
    pub minor: u32,
}

impl ApiVersion {
    pub fn parse(value: Option<&str>) -> Result<ApiVersion, String> {
        let value = value.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("The {VERSION_HEADER} header is required; this broker speaks 2.{MIN_MINOR} to 2.17.")
        })?;
        let minor = value
            .strip_prefix("2.")
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| {
                format!("{VERSION_HEADER} '{value}' is not supported; this broker speaks 2.{MIN_MINOR} to 2.17.")
            })?;
        if minor < MIN_MINOR {
            return Err(format!(
                "{VERSION_HEADER} '{value}' is too old; this broker needs 2.{MIN_MINOR} or later."
            ));
        }
        Ok(ApiVersion { minor })
    }

    pub fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }
}

impl FromRequest for ApiVersion {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<ApiVersion>()
                .copied()
                .ok_or_else(|| {
                    OsbError::new(
                        actix_web::http::StatusCode::PRECONDITION_FAILED,
                        "no API version",
                    )
                    .into()
                }),
        )
    }
}

fn authorized(req: &ServiceRequest, state: &AppState) -> bool {
    let Some(encoded) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", state.username, state.password);
    // Constant time over the content; only the length can show.
    decoded.ct_eq(expected.as_bytes()).into()
}

/// `<platform> <base64 of a JSON object>`, parsed for the log context.
fn originating_identity(value: &str) -> Result<(String, serde_json::Value), ()> {
    let (platform, encoded) = value.trim().split_once(' ').ok_or(())?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ())?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|_| ())?;
    if platform.is_empty() || !value.is_object() {
        return Err(());
    }
    Ok((platform.to_string(), value))
}

pub async fn osb_guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let request_identity = req.headers().get(REQUEST_IDENTITY).cloned();
    let echo = |mut res: ServiceResponse<BoxBody>| {
        if let Some(id) = &request_identity {
            res.headers_mut()
                .insert(REQUEST_IDENTITY.try_into().expect("valid"), id.clone());
        }
        res
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    if !authorized(&req, &state) {
        let mut res = OsbError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "Missing or wrong broker credentials (HTTP Basic).",
        )
        .error_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"domain-broker\""),
        );
        return Ok(echo(req.into_response(res)));
    }
    let version = req
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok());
    let version = match ApiVersion::parse(version) {
        Ok(v) => v,
        Err(msg) => {
            let res = OsbError::new(actix_web::http::StatusCode::PRECONDITION_FAILED, msg);
            return Ok(echo(req.into_response(res.error_response())));
        }
    };
    if let Some(value) = req.headers().get(ORIGINATING_IDENTITY) {
        match value
            .to_str()
            .map_err(|_| ())
            .and_then(originating_identity)
        {
            Ok((platform, identity)) => {
                tracing::info!(%platform, %identity, "originating identity");
            }
            Err(()) => {
                let res = OsbError::bad_request(format!(
                    "{ORIGINATING_IDENTITY} must be '<platform> <base64-encoded JSON object>'."
                ));
                return Ok(echo(req.into_response(res.error_response())));
            }
        }
    }
    req.extensions_mut().insert(version);
    let res = next.call(req).await?.map_into_boxed_body();
    Ok(echo(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            ApiVersion::parse(Some("2.17")),
            Ok(ApiVersion { minor: 17 })
        );
        assert_eq!(
            ApiVersion::parse(Some("2.13")),
            Ok(ApiVersion { minor: 13 })
        );
        for bad in [
            None,
            Some(""),
            Some("2.12"),
            Some("3.0"),
            Some("2"),
            Some("two"),
        ] {
            assert!(ApiVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identities() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(r#"{"user_id":"u"}"#);
        assert!(originating_identity(&format!("cloudfoundry {encoded}")).is_ok());
        assert!(originating_identity("cloudfoundry").is_err());
        assert!(originating_identity("cloudfoundry !!!").is_err());
        let not_object = base64::engine::general_purpose::STANDARD.encode("[1]");
        assert!(originating_identity(&format!("cf {not_object}")).is_err());
    }
}
