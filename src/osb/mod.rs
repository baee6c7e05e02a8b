//! The OSB HTTP surface: routes, request parsing, and response shapes.

mod bindings;
mod error;
mod guard;
mod instances;
mod request;

pub use error::OsbError;
pub use guard::{ApiVersion, MIN_MINOR, REQUEST_IDENTITY, VERSION_HEADER};

use actix::Addr;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};

use crate::actors::{BrokerError, Route, Supervisor};
use crate::deps::Deps;

/// What every handler shares.
pub struct AppState {
    pub username: String,
    pub password: String,
    pub deps: Deps,
    pub supervisor: Addr<Supervisor>,
}

impl AppState {
    /// Sends `msg` to the instance's actor and waits for its answer.
    pub async fn ask<M, T>(&self, instance_id: &str, msg: M) -> Result<T, OsbError>
    where
        M: actix::Message<Result = Result<T, BrokerError>> + Send + 'static,
        T: Send + 'static,
        crate::actors::InstanceActor: actix::Handler<M>,
    {
        let reply = self
            .supervisor
            .send(Route(instance_id.to_string(), msg))
            .await
            .map_err(BrokerError::from)?;
        Ok(reply??)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(ping))
        .route("/healthz", web::get().to(healthz))
        .service(
            web::scope("/v2")
                .wrap(from_fn(guard::osb_guard))
                .route("/catalog", web::get().to(catalog))
                .service(
                    web::resource("/service_instances/{instance_id}")
                        .route(web::put().to(instances::provision))
                        .route(web::get().to(instances::fetch))
                        .route(web::patch().to(instances::update))
                        .route(web::delete().to(instances::deprovision)),
                )
                .route(
                    "/service_instances/{instance_id}/last_operation",
                    web::get().to(instances::last_operation),
                )
                .service(
                    web::resource("/service_instances/{instance_id}/service_bindings/{binding_id}")
                        .route(web::put().to(bindings::bind))
                        .route(web::get().to(bindings::fetch))
                        .route(web::delete().to(bindings::unbind)),
                )
                .route(
                    "/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation",
                    web::get().to(bindings::last_operation),
                )
                .default_service(web::to(not_found)),
        );
}

async fn ping() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("pong")
}

/// Healthy when the database answers.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.deps.store.pool().get().await {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ok"})),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "database": e.to_string()})),
    }
}

async fn catalog(version: ApiVersion) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::catalog::catalog_bytes(version.minor))
}

async fn not_found() -> Result<HttpResponse, OsbError> {
    Err(OsbError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "No such OSB endpoint on this broker.",
    ))
}
