//! Crash safety: a broker killed with SIGKILL mid-provision and started again
//! finishes the provision, with one ACME account and no record left behind.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

struct BrokerProcess {
    child: Child,
}

impl BrokerProcess {
    fn start(vars: &HashMap<String, String>) -> BrokerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_domain-broker"))
            .arg("serve")
            .env_clear()
            .envs(vars)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("broker binary starts");
        BrokerProcess { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn killed_mid_provision_resumes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(backend, dir.path()).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A long propagation wait holds the provision between "TXT written" and
    // "challenges answered" for long enough to kill it there.
    let vars = broker_env(
        &database_url,
        &[("BROKER_ADDR", &addr), ("DNS_PROPAGATION_SLEEP_TIME", "3")],
    );
    let (user, password) = (
        vars["BROKER_USERNAME"].clone(),
        vars["BROKER_PASSWORD"].clone(),
    );
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/v2/service_instances");
    let domain = delegated_domain().await;
    let id = format!("crash-{}", random_label());

    let broker = BrokerProcess::start(&vars);
    let deadline = Instant::now() + Duration::from_secs(20);
    let res = loop {
        let req = client
            .put(format!("{base}/{id}?accepts_incomplete=true"))
            .basic_auth(&user, Some(&password))
            .header("X-Broker-API-Version", "2.17")
            .json(&provision_body(&domain));
        match req.send().await {
            Ok(res) => break res,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("broker did not come up: {e}"),
        }
    };
    assert_eq!(res.status(), 202);
    let poll = || async {
        let res = client
            .get(format!("{base}/{id}/last_operation"))
            .basic_auth(&user, Some(&password))
            .header("X-Broker-API-Version", "2.17")
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    let txt_name = challenge_txt_name(&domain);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = poll().await;
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
    broker.kill();
    assert_eq!(
        txt_values(&txt_name).len(),
        1,
        "the TXT record was written before the kill"
    );

    let _broker = BrokerProcess::start(&vars);
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        if let Ok(res) = client
            .get(format!("{base}/{id}/last_operation"))
            .basic_auth(&user, Some(&password))
            .header("X-Broker-API-Version", "2.17")
            .send()
            .await
        {
            let body: Value = res.json().await.unwrap();
            if body["state"] != "in progress" {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restarted broker did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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

both_backends!(killed_mid_provision_resumes);

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

async fn wait_until_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
