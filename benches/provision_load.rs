//! Concurrent provisioning: N `certificate` provisions through the broker's
//! HTTP API to `succeeded` (provision_load), against the same N certificates
//! issued by a bare instant-acme loop with the same concurrency
//! (acme_baseline), both against Pebble and BIND. Each iteration uses fresh,
//! delegated domains; delegation is set up outside the timed part.
//!
//!     ./dev bench --bench provision_load            # N = 10, 100
//!     BENCH_N=1000 ./dev bench --bench provision_load
//!
//! Besides criterion's time per batch, each run prints the p50 and p99 time
//! from PUT to `succeeded` of the individual provisions.

#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain_broker::acme::{csr_der, http_client, new_private_key_pem, root_store};
use domain_broker::config::Env;
use domain_broker::dns::ChallengeRecords;
use domain_broker::domain::{DomainList, DomainName};
use helpers::*;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, RetryPolicy,
};

fn sizes() -> Vec<usize> {
    std::env::var("BENCH_N")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("BENCH_N: numbers separated by commas")
        })
        .collect()
}

fn percentiles(mut times: Vec<Duration>) -> String {
    if times.is_empty() {
        return "not run (filtered out)".into();
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    format!("p50 {:.2?}, p99 {:.2?}", at(0.50), at(0.99))
}

/// Pebble keeps every authorization it made and scans them all at each new
/// order, so it slows as a run goes on: each row starts with a fresh one
/// (`./dev bench` says how), and the figures of a row do not depend on the
/// rows before it.
fn fresh_pebble() {
    if let Ok(command) = std::env::var("BENCH_RESTART_PEBBLE") {
        let status = std::process::Command::new("sh")
            .args(["-c", &command])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("restart Pebble");
        assert!(status.success(), "{command} failed");
    }
}

async fn delegated(n: usize) -> Vec<String> {
    let mut domains = Vec::with_capacity(n);
    for _ in 0..n {
        domains.push(delegated_domain().await);
    }
    domains
}

/// N provisions at once through the API; returns each one's time to succeeded.
async fn provision_all(app: &TestApp, domains: Vec<String>) -> Vec<Duration> {
    // Each look at `last_operation` is a request to the broker: at N = 1000
    // every 50 ms would be 20,000 a second, on the cores doing the work.
    let poll = if domains.len() > 100 { 200 } else { 50 };
    let tasks = domains.into_iter().map(|domain| async move {
        let began = Instant::now();
        let id = format!("load-{}", random_label());
        assert_eq!(
            app.provision(&id, &provision_body(&domain)).await.status(),
            202
        );
        loop {
            let (_, body) = app.last_operation(&id).await;
            match body["state"].as_str() {
                Some("succeeded") => return began.elapsed(),
                Some("in progress") => tokio::time::sleep(Duration::from_millis(poll)).await,
                _ => panic!("{id}: {body}"),
            }
        }
    });
    futures_util::future::join_all(tasks).await
}

/// The same certificates by a bare instant-acme loop: order, TXT records by
/// RFC 2136, answer, poll, finalize, download, remove the records.
async fn issue(
    account: &Account,
    dns: &ChallengeRecords,
    root: &DomainName,
    domain: &str,
) -> Duration {
    let began = Instant::now();
    let name = DomainName::parse(domain).unwrap();
    let mut order = account
        .new_order(&NewOrder::new(&[Identifier::Dns(domain.to_string())]))
        .await
        .unwrap();
    let mut records = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.unwrap();
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut challenge = authz.challenge(ChallengeType::Dns01).unwrap();
        let value = challenge.key_authorization().dns_value();
        let txt = name.delegated_challenge_name(root);
        dns.add_txt(&txt, &value).await.unwrap();
        challenge.set_ready().await.unwrap();
        records.push((txt, value));
    }
    let policy = RetryPolicy::default();
    order.poll_ready(&policy).await.unwrap();
    let key = new_private_key_pem();
    let csr = csr_der(&key, &DomainList::new(vec![name])).unwrap();
    order.finalize_csr(&csr).await.unwrap();
    order.poll_certificate(&policy).await.unwrap();
    for (txt, value) in records {
        dns.remove_txt(&txt, &value).await.unwrap();
    }
    began.elapsed()
}

fn provision_load(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let config = Env(|n: &str| {
        vars.get(n).cloned().or_else(|| match n {
            "BROKER_USERNAME" | "BROKER_PASSWORD" => Some("bench".into()),
            _ => None,
        })
    })
    .config()
    .expect("run through ./dev bench");
    let dns = Arc::new(ChallengeRecords::new(&config.dns, None).unwrap());
    let new_account = || {
        system.block_on(async {
            let roots = Arc::new(root_store(&config.acme).unwrap());
            let (account, _) = Account::builder_with_http(http_client(roots))
                .create(
                    &NewAccount {
                        contact: &[],
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    config.acme.directory_url.clone(),
                    None,
                )
                .await
                .unwrap();
            account
        })
    };
    for n in sizes() {
        let mut group = c.benchmark_group(format!("provision_load/n={n}"));
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(1));
        group.measurement_time(Duration::from_secs(1));
        for backend in [Backend::Sqlite, Backend::Postgres] {
            fresh_pebble();
            let app = system.block_on(spawn_app(backend));
            let mut times = Vec::new();
            group.bench_function(format!("broker/{backend:?}").to_lowercase(), |b| {
                b.iter_custom(|iterations| {
                    system.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iterations {
                            let domains = delegated(n).await;
                            let began = Instant::now();
                            times.extend(provision_all(&app, domains).await);
                            total += began.elapsed();
                        }
                        total
                    })
                })
            });
            eprintln!(
                "provision_load n={n} {backend:?}: {} provisions, {}",
                times.len(),
                percentiles(times)
            );
        }
        fresh_pebble();
        let account = new_account();
        let mut times = Vec::new();
        group.bench_function("acme_baseline", |b| {
            b.iter_custom(|iterations| {
                system.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let domains = delegated(n).await;
                        let began = Instant::now();
                        let runs = domains
                            .iter()
                            .map(|d| issue(&account, &dns, &config.dns.root_domain, d));
                        times.extend(futures_util::future::join_all(runs).await);
                        total += began.elapsed();
                    }
                    total
                })
            })
        });
        eprintln!(
            "acme_baseline n={n}: {} certificates, {}",
            times.len(),
            percentiles(times)
        );
        group.finish();
    }
}

criterion_group!(benches, provision_load);
criterion_main!(benches);
