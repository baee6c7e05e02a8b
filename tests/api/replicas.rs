//! Several replicas on one PostgreSQL: any replica answers any request, each
//! instance's pipeline is driven by one replica at a time, and the work of a
//! replica that dies is finished by the others once its leases lapse.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_broker::db::schema::{operation_steps, operations};
use reqwest::Method;

use crate::helpers::*;
use crate::process::*;

const LEASE_SECONDS: i64 = 3;

#[actix_web::test]
async fn three_replicas_share_the_work_and_survive_one_dying() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(Backend::Postgres, dir.path()).await;
    let password = format!("pw-{}", random_label());
    let lease = LEASE_SECONDS.to_string();
    let mut replicas = Vec::new();
    for n in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let replica_id = format!("replica-{n}");
        let vars: HashMap<String, String> = broker_env(
            &database_url,
            &[
                ("BROKER_ADDR", &addr),
                ("BROKER_PASSWORD", &password),
                ("REPLICA_ID", &replica_id),
                ("LEASE_SECONDS", &lease),
                ("DNS_PROPAGATION_SLEEP_TIME", "2"),
            ],
        );
        let process = BrokerProcess::start(&vars);
        replicas.push((process, Client::new(&addr, &vars), addr));
    }
    for (_, _, addr) in &replicas {
        wait_until_listening(addr).await;
    }

    // Twelve provisions, spread across the replicas.
    let mut ids = Vec::new();
    for n in 0..12 {
        let id = format!("rep-{n}-{}", random_label());
        let client = &replicas[n % 3].1;
        let res = client
            .request(Method::PUT, &format!("{id}?accepts_incomplete=true"))
            .json(&provision_body(&delegated_domain().await))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        ids.push(id);
    }
    // Any replica answers for any instance.
    for id in &ids {
        let body = replicas[2].1.last_operation(id).await.unwrap();
        assert!(body["state"].is_string(), "{body}");
    }

    // One replica dies while its provisions wait for DNS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (dead, _, _) = replicas.remove(0);
    dead.stop("KILL");

    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let body = replicas[0].1.last_operation(id).await.unwrap();
            if body["state"] == "succeeded" {
                break;
            }
            assert_ne!(body["state"], "failed", "{id}: {body}");
            assert!(Instant::now() < deadline, "{id} did not finish: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Each operation's step runs never overlap: one replica at a time. A run
    // the dead replica never finished ended, at the latest, with its lease.
    let pool = domain_broker::db::pool(&database_url, 1).await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let runs: Vec<(
        String,
        String,
        chrono::NaiveDateTime,
        Option<chrono::NaiveDateTime>,
    )> = operation_steps::table
        .inner_join(operations::table)
        .filter(operations::kind.eq("provision"))
        .select((
            operation_steps::operation_id,
            operation_steps::replica,
            operation_steps::started_at,
            operation_steps::finished_at,
        ))
        .order((operation_steps::operation_id, operation_steps::started_at))
        .load(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let replicas_seen: std::collections::HashSet<&str> =
        runs.iter().map(|r| r.1.as_str()).collect();
    assert!(
        replicas_seen.len() >= 2,
        "the work was not shared: {replicas_seen:?}"
    );
    let mut taken_over = 0;
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.0 != b.0 {
            continue;
        }
        let end =
            a.3.unwrap_or(a.2 + chrono::Duration::seconds(LEASE_SECONDS));
        assert!(
            end <= b.2,
            "operation {}: a run by {} overlaps one by {}",
            a.0,
            a.1,
            b.1
        );
        if a.1 != b.1 {
            taken_over += 1;
        }
    }
    assert!(
        taken_over >= 1,
        "no operation moved to another replica after the kill"
    );
    assert_eq!(
        count_rows(&pool, "dns_records").await,
        0,
        "records left behind"
    );
}
