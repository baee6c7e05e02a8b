//! The request path in process: catalog, last_operation and GET instance
//! through the actix-web service, with 10,000 instances in the store, on
//! SQLite and PostgreSQL. Run with `./dev bench --bench request_path`.

#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::collections::HashMap;

use actix_web::{App, test};
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use diesel_async::{AsyncConnection, RunQueryDsl};
use domain_broker::config::Env;
use domain_broker::db::models::{InstanceRow, OperationRow, now};
use domain_broker::db::schema::{operations, service_instances};
use domain_broker::startup::{Broker, routes};
use helpers::{Backend, fresh_database};

const INSTANCES: usize = 10_000;
const CERT_PLAN: &str = "2fd4db4f-9a61-4f5f-8ecc-4457bd823d61";

/// Stored instances, each with a finished provision.
async fn seed(broker: &Broker) {
    let mut conn = broker.state.deps.store.pool().get().await.unwrap();
    let at = now();
    for chunk in (0..INSTANCES).collect::<Vec<_>>().chunks(500) {
        let instances: Vec<InstanceRow> = chunk
            .iter()
            .map(|i| InstanceRow {
                id: format!("bench-{i}"),
                service_id: domain_broker::catalog::SERVICE_ID.into(),
                plan_id: CERT_PLAN.into(),
                organization_guid: "org".into(),
                space_guid: "space".into(),
                context: None,
                parameters: format!(r#"{{"domains":"d{i}.example.com"}}"#),
                domains: format!(r#"["d{i}.example.com"]"#),
                state: "provisioned".into(),
                current_certificate_id: None,
                created_at: at,
                updated_at: at,
                lease_owner: None,
                lease_expires_at: None,
            })
            .collect();
        let ops: Vec<OperationRow> = instances
            .iter()
            .map(|i| {
                let mut op = OperationRow::start(&i.id, "provision", "done", "{}".into());
                op.state = "succeeded".into();
                op
            })
            .collect();
        // Row by row (the two-backend connection has no batch insert), one
        // transaction per chunk.
        conn.transaction(async |c| {
            for (instance, op) in instances.iter().zip(&ops) {
                diesel::insert_into(service_instances::table)
                    .values(instance)
                    .execute(c)
                    .await?;
                diesel::insert_into(operations::table)
                    .values(op)
                    .execute(c)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .await
        .unwrap();
    }
}

fn request_path(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let (broker, service) = system.block_on(async {
            let url = fresh_database(backend, dir.path()).await;
            let mut vars: HashMap<String, String> = std::env::vars().collect();
            vars.insert("DATABASE_URL".into(), url.to_string());
            vars.insert("BROKER_USERNAME".into(), "bench".into());
            vars.insert("BROKER_PASSWORD".into(), "bench".into());
            vars.insert("RENEWAL_CHECK_INTERVAL_SECONDS".into(), "86400".into());
            let config = Env(|n: &str| vars.get(n).cloned())
                .config()
                .expect("run through ./dev bench");
            let broker = Broker::start(config).await.unwrap();
            seed(&broker).await;
            let state = broker.state.clone();
            let service = test::init_service(App::new().configure(|cfg| routes(cfg, state))).await;
            (broker, service)
        });
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bench:bench")
        );
        let mut group = c.benchmark_group(format!("request_path/{backend:?}").to_lowercase());
        let mut n = 0usize;
        for (name, path) in [
            ("catalog", "/v2/catalog".to_string()),
            ("last_operation", String::new()),
            ("get_instance", String::new()),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    n = (n + 7919) % INSTANCES;
                    let uri = match name {
                        "last_operation" => {
                            format!("/v2/service_instances/bench-{n}/last_operation")
                        }
                        "get_instance" => format!("/v2/service_instances/bench-{n}"),
                        _ => path.clone(),
                    };
                    let req = test::TestRequest::get()
                        .uri(&uri)
                        .insert_header(("Authorization", auth.as_str()))
                        .insert_header(("X-Broker-API-Version", "2.17"))
                        .to_request();
                    let res = system.block_on(test::call_service(&service, req));
                    assert!(res.status().is_success(), "{uri}: {}", res.status());
                })
            });
        }
        group.finish();
        drop(service);
        drop(broker);
    }
}

criterion_group!(benches, request_path);
criterion_main!(benches);
