//! StoreActor write throughput: many small transactions (the progress record
//! a pipeline step writes) queued from concurrent tasks, on SQLite and
//! PostgreSQL, each write committed alone or with those queued beside it
//! (group commit). Run with `./dev bench --bench store_writes`.

#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain_broker::actors::Store;
use domain_broker::actors::store::GROUP_COMMIT;
use domain_broker::db::{self, models, queries};
use helpers::{Backend, fresh_database};

const WRITES: u64 = 500;
const TASKS: u64 = 50;

/// One instance per task, each with a running operation whose progress the
/// writes record.
async fn setup(store: &Store) -> Vec<String> {
    let mut ops = Vec::new();
    for t in 0..TASKS {
        let at = models::now();
        let instance = models::InstanceRow {
            id: format!("w-{t}"),
            service_id: domain_broker::catalog::SERVICE_ID.into(),
            plan_id: "2fd4db4f-9a61-4f5f-8ecc-4457bd823d61".into(),
            organization_guid: "o".into(),
            space_guid: "s".into(),
            context: None,
            parameters: "{}".into(),
            domains: format!(r#"["w{t}.example.com"]"#),
            state: "provisioning".into(),
            current_certificate_id: None,
            created_at: at,
            updated_at: at,
            lease_owner: None,
            lease_expires_at: None,
        };
        let op = models::OperationRow::start(&instance.id, "provision", "bench", "{}".into());
        ops.push(op.id.clone());
        let domain = format!("w{t}.example.com");
        store
            .write("bench_setup", move |c| {
                Box::pin(async move {
                    queries::create_instance(c, &instance, &[&domain], &op)
                        .await
                        .map(|_| ())
                })
            })
            .await
            .unwrap();
    }
    ops
}

fn store_writes(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    for (backend, max_batch) in [
        (Backend::Sqlite, 1),
        (Backend::Sqlite, GROUP_COMMIT),
        (Backend::Postgres, 1),
        (Backend::Postgres, GROUP_COMMIT),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (store, ops) = system.block_on(async {
            let url = fresh_database(backend, dir.path()).await;
            db::migrate(&url).await.unwrap();
            let store = Store::start(&url, db::pool(&url, 8).await.unwrap(), max_batch)
                .await
                .unwrap();
            let ops = setup(&store).await;
            (store, ops)
        });
        let mut group = c.benchmark_group(format!("store_writes/{backend:?}").to_lowercase());
        group.throughput(Throughput::Elements(WRITES));
        group.measurement_time(Duration::from_secs(10));
        group.sample_size(10);
        let name = match max_batch {
            1 => "record_progress/alone",
            _ => "record_progress/group_commit",
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                system.block_on(async {
                    let began = Instant::now();
                    for _ in 0..iterations {
                        let tasks: Vec<_> = (0..WRITES)
                            .map(|n| {
                                let store = store.clone();
                                let op = ops[(n % TASKS) as usize].clone();
                                actix_web::rt::spawn(async move {
                                    let progressed = store
                                        .write("record_progress", move |c| {
                                            Box::pin(async move {
                                                let progress = queries::Progress {
                                                    next_step: 0,
                                                    attempts: n as i32 % 9,
                                                    next_attempt_at: models::now(),
                                                    description: "Benchmarking",
                                                    last_error: None,
                                                    at: models::now(),
                                                };
                                                queries::record_progress(c, &op, 0, &progress).await
                                            })
                                        })
                                        .await
                                        .unwrap();
                                    assert!(progressed, "the operation waits for step 0");
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.unwrap();
                        }
                    }
                    began.elapsed()
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, store_writes);
criterion_main!(benches);
