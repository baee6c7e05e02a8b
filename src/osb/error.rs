//! The one place where broker errors become OSB responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::BrokerError;

/// An OSB error response: status, optional error code, and a sentence a
/// person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsbError {
    pub status: StatusCode,
    pub code: Option<&'static str>,
    pub description: String,
}

impl OsbError {
    pub fn new(status: StatusCode, description: impl Into<String>) -> OsbError {
        OsbError {
            status,
            code: None,
            description: description.into(),
        }
    }

    pub fn bad_request(description: impl Into<String>) -> OsbError {
        OsbError::new(StatusCode::BAD_REQUEST, description)
    }

    pub fn with_code(mut self, code: &'static str) -> OsbError {
        self.code = Some(code);
        self
    }

    pub fn async_required() -> OsbError {
        OsbError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This request requires client support for asynchronous service operations: \
             add accepts_incomplete=true to the query.",
        )
        .with_code("AsyncRequired")
    }

    pub fn concurrency(description: impl Into<String>) -> OsbError {
        OsbError::new(StatusCode::UNPROCESSABLE_ENTITY, description).with_code("ConcurrencyError")
    }

    pub fn gone() -> OsbError {
        OsbError::new(StatusCode::GONE, "")
    }
}

impl std::fmt::Display for OsbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.description)
    }
}

impl ResponseError for OsbError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        // 410 answers carry the empty object the spec asks for.
        let body = match (self.status, self.code) {
            (StatusCode::GONE, _) => json!({}),
            (_, Some(code)) => json!({"error": code, "description": self.description}),
            (_, None) => json!({"description": self.description}),
        };
        HttpResponse::build(self.status).json(body)
    }
}

impl From<BrokerError> for OsbError {
    fn from(e: BrokerError) -> OsbError {
        use BrokerError::*;
        match e {
            Invalid(msg) => OsbError::bad_request(msg),
            Conflict(msg) => OsbError::new(StatusCode::CONFLICT, msg),
            Busy(msg) => OsbError::concurrency(msg),
            NotFound(msg) => OsbError::new(StatusCode::NOT_FOUND, msg),
            Gone => OsbError::gone(),
            Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                OsbError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The broker hit an internal error; it has been logged. Try again shortly.",
                )
            }
        }
    }
}

impl From<crate::db::DbError> for OsbError {
    fn from(e: crate::db::DbError) -> OsbError {
        BrokerError::from(e).into()
    }
}
