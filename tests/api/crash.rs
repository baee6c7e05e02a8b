//! Crash safety: a broker killed (SIGKILL) or stopped (SIGTERM) in the middle
//! of a provision and started again finishes it, with one ACME account and no
//! record left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::aws::AwsWorld;
use crate::both_backends;
use crate::helpers::*;
use crate::process::*;

/// Stops the broker with `signal` while a provision waits between "TXT
/// written" and "challenges answered", starts it again, and checks that the
/// provision completes with one ACME account and no record left behind.
async fn interrupted_provision_resumes(backend: Backend, signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(backend, dir.path()).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = broker_env(
        &database_url,
        &[("BROKER_ADDR", &addr), ("DNS_PROPAGATION_SLEEP_TIME", "3")],
    );
    let client = Client::new(&addr, &vars);
    let domain = delegated_domain().await;
    let id = format!("crash-{}", random_label());

    let broker = BrokerProcess::start(&vars);
    wait_until_listening(&addr).await;
    let res = client
        .request(
            reqwest::Method::PUT,
            &format!("{id}?accepts_incomplete=true"),
        )
        .json(&provision_body(&domain))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let txt_name = challenge_txt_name(&domain);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = client.last_operation(&id).await.unwrap();
        if body["description"] == "Waiting for DNS changes to propagate"
            && !txt_values(&txt_name).is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the DNS wait: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    let status = broker.stop(signal);
    if signal == "TERM" {
        assert!(status.success(), "a SIGTERM stop exited with {status}");
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "a SIGTERM stop took {:?}",
            stopping.elapsed()
        );
    }
    assert_eq!(
        txt_values(&txt_name).len(),
        1,
        "the TXT record was written before the stop"
    );

    let _broker = BrokerProcess::start(&vars);
    let done = client.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let pool = domain_broker::db::pool(&database_url, 1).await.unwrap();
    assert_eq!(
        count_rows(&pool, "acme_accounts").await,
        1,
        "a second ACME account was made"
    );
    assert_eq!(count_rows(&pool, "dns_records").await, 0);
    assert!(
        txt_values(&txt_name).is_empty(),
        "a challenge record was left behind"
    );
}

async fn killed_mid_provision_resumes(backend: Backend) {
    interrupted_provision_resumes(backend, "KILL").await
}

/// SIGTERM: the broker stops at once (the DNS wait is a timer, not a
/// running step), exits cleanly, and the next start resumes.
async fn terminated_mid_provision_resumes(backend: Backend) {
    interrupted_provision_resumes(backend, "TERM").await
}

both_backends!(
    killed_mid_provision_resumes,
    terminated_mid_provision_resumes
);

/// SIGKILL between "distribution created" and "ALIAS written": the restart
/// finishes the provision with the same distribution, not a second one.
async fn killed_between_distribution_and_alias_resumes(backend: Backend) {
    let world = AwsWorld::new().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(backend, dir.path()).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut extra: Vec<(&str, String)> = world.settings();
    extra.push(("BROKER_ADDR", addr.clone()));
    // The distribution reads "InProgress" once: the wait polls after 3 s.
    extra.push(("AWS_POLL_WAIT_TIME_IN_SECONDS", "3".into()));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let vars = broker_env(&database_url, &extra);
    let client = Client::new(&addr, &vars);
    let domain = delegated_domain().await;
    let id = format!("crash-cdn-{}", random_label());

    let broker = BrokerProcess::start(&vars);
    wait_until_listening(&addr).await;
    let mut body = provision_body(&domain);
    body["plan_id"] = CDN_PLAN.into();
    let res = client
        .request(
            reqwest::Method::PUT,
            &format!("{id}?accepts_incomplete=true"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = client.last_operation(&id).await.unwrap();
        if body["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Waiting for the CloudFront distribution to deploy"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the distribution wait: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.stop("KILL");
    assert_eq!(
        world.distributions(&id).await.len(),
        1,
        "the distribution was made"
    );
    assert!(
        world.aliases_of(&domain).await.is_empty(),
        "no ALIAS record yet"
    );

    let _broker = BrokerProcess::start(&vars);
    let done = client.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let distributions = world.distributions(&id).await;
    assert_eq!(distributions.len(), 1, "a second distribution was made");
    let target = distributions[0].1.clone();
    assert_eq!(
        world.aliases_of(&domain).await,
        vec![
            ("A".to_string(), target.clone()),
            ("AAAA".to_string(), target)
        ]
    );
}

both_backends!(killed_between_distribution_and_alias_resumes);

/// The CLI: `catalog` prints the catalog, `migrate` applies migrations, and
/// `serve` with a missing setting stops and names it.
#[test]
fn command_line() {
    let bin = env!("CARGO_BIN_EXE_domain-broker");
    let out = Command::new(bin).arg("catalog").output().unwrap();
    assert!(out.status.success());
    let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(catalog["services"][0]["name"], "external-domain");

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/broker.sqlite", dir.path().display());
    let out = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("nested/broker.sqlite").exists());

    let out = Command::new(bin)
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_ENCRYPTION_KEY"), "{stderr}");
}

/// Two brokers on one SQLite file would drive the same instances twice:
/// the second refuses to start and says why.
#[actix_web::test]
async fn second_broker_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(Backend::Sqlite, dir.path()).await;
    let first_addr = format!("127.0.0.1:{}", free_port());
    let vars = broker_env(&database_url, &[("BROKER_ADDR", &first_addr)]);
    let _first = BrokerProcess::start(&vars);
    wait_until_listening(&first_addr).await;
    let second_addr = format!("127.0.0.1:{}", free_port());
    let vars = broker_env(&database_url, &[("BROKER_ADDR", &second_addr)]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_domain-broker"))
            .arg("serve")
            .env_clear()
            .envs(&vars)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another domain-broker already runs on"),
        "{stderr}"
    );
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
}

/// Fifty provisions at once, and the broker killed with SIGKILL ten times
/// while they run, started again each time: all end succeeded, with one ACME
/// account and no DNS record but those of live instances.
async fn fifty_provisions_survive_ten_kills(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(backend, dir.path()).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = broker_env(
        &database_url,
        &[("BROKER_ADDR", &addr), ("DNS_PROPAGATION_SLEEP_TIME", "1")],
    );
    let client = Client::new(&addr, &vars);
    let mut broker = BrokerProcess::start(&vars);
    wait_until_listening(&addr).await;
    let (mut ids, mut domains) = (Vec::new(), Vec::new());
    for n in 0..50 {
        let id = format!("many-{n}-{}", random_label());
        let domain = delegated_domain().await;
        let res = client
            .request(
                reqwest::Method::PUT,
                &format!("{id}?accepts_incomplete=true"),
            )
            .json(&provision_body(&domain))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        ids.push(id);
        domains.push(domain);
    }
    // Kill points spread over the whole run, at uneven moments.
    for pause_ms in [150, 400, 250, 700, 300, 550, 200, 650, 350, 500] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        broker.stop("KILL");
        broker = BrokerProcess::start(&vars);
        wait_until_listening(&addr).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            if let Some(body) = client.last_operation(id).await {
                if body["state"] == "succeeded" {
                    break;
                }
                assert_ne!(body["state"], "failed", "{id}: {body}");
            }
            assert!(Instant::now() < deadline, "{id} did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(broker);
    let pool = domain_broker::db::pool(&database_url, 1).await.unwrap();
    assert_eq!(
        count_rows(&pool, "acme_accounts").await,
        1,
        "a second ACME account was made"
    );
    assert_eq!(
        count_rows(&pool, "dns_records").await,
        0,
        "records left behind"
    );
    assert_eq!(count_rows(&pool, "service_instances").await, 50);
    for domain in &domains {
        assert!(
            txt_values(&challenge_txt_name(domain)).is_empty(),
            "{domain}: record left in DNS"
        );
    }
}

both_backends!(fifty_provisions_survive_ten_kills);
