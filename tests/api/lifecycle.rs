//! The certificate plan end to end: provision, bind, verify what was handed
//! out, unbind, deprovision, and nothing left behind.

use std::process::Command;

use reqwest::Method;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

/// Pebble's root for this run (it makes a new one each start).
fn pebble_root() -> String {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--cacert",
            &env("ACME_ROOT_CERT"),
            &format!("{}/roots/0", env("PEBBLE_MGMT_URL")),
        ])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "cannot fetch Pebble's root");
    String::from_utf8(out.stdout).unwrap()
}

/// Checks what a binding hands out: the key matches the certificate, the
/// SANs are the domains, and the chain verifies to Pebble's root.
fn verify_credentials(credentials: &Value, domains: &[&str]) {
    let chain = credentials["certificate"].as_str().unwrap();
    let key_pem = credentials["private_key"].as_str().unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the private key does not match the certificate"
    );
    let mut sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    sans.sort();
    let mut expected: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    expected.sort();
    assert_eq!(sans, expected);
    let dir = tempfile::tempdir().unwrap();
    let end = chain.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    std::fs::write(dir.path().join("leaf.pem"), &chain[..end]).unwrap();
    std::fs::write(dir.path().join("chain.pem"), &chain[end..]).unwrap();
    std::fs::write(dir.path().join("root.pem"), pebble_root()).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chain does not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn certificate_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let id = format!("inst-{}", random_label());
    let res = app
        .provision(&id, &provision_body(&format!("{a}, {b}")))
        .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert!(body["operation"].is_string());
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // Every step's run is on record, in order (a poll runs its step more
    // than once).
    let mut runs = step_runs(&app, &id).await;
    runs.dedup();
    assert_eq!(
        runs,
        [
            "ensure_acme_account",
            "create_order",
            "write_txt_records",
            "wait_for_dns",
            "answer_challenges",
            "await_validation",
            "finalize_order",
            "install_certificate",
            "remove_txt_records",
        ]
    );

    let res = app.bind(&id, "bind-1", &bind_body()).await;
    assert_eq!(res.status(), 201);
    let bound: Value = res.json().await.unwrap();
    verify_credentials(&bound["credentials"], &[&a, &b]);
    assert_eq!(bound["credentials"]["domains"], serde_json::json!([a, b]));
    assert!(bound["metadata"]["expires_at"].is_string());
    assert!(bound["metadata"]["renew_before"].is_string());
    // The challenge records were removed once the order was valid.
    assert!(txt_values(&challenge_txt_name(&a)).is_empty());
    assert_eq!(app.count("dns_records").await, 0);

    let unbind = format!(
        "/v2/service_instances/{id}/service_bindings/bind-1?service_id={SERVICE_ID}&plan_id={CERT_PLAN}"
    );
    let res = app.request(Method::DELETE, &unbind).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "{}");

    assert_eq!(app.deprovision(&id).await.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded");
    assert!(txt_values(&challenge_txt_name(&a)).is_empty());
    assert!(txt_values(&challenge_txt_name(&b)).is_empty());
    for table in [
        "certificates",
        "challenges",
        "dns_records",
        "bindings",
        "instance_domains",
    ] {
        assert_eq!(app.count(table).await, 0, "{table} still has rows");
    }
    assert_eq!(app.deprovision(&id).await.status(), 410);
    // The tombstone still answers.
    let (status, body) = app.last_operation(&id).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("succeeded")));
    assert_eq!(app.count("acme_accounts").await, 1);
}

/// The steps the instance's provision ran, in order.
async fn step_runs(app: &TestApp, instance_id: &str) -> Vec<String> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use domain_broker::db::schema::{operation_steps, operations};
    let mut conn = app.pool.get().await.unwrap();
    operation_steps::table
        .inner_join(operations::table)
        .filter(operations::instance_id.eq(instance_id))
        .filter(operations::kind.eq("provision"))
        .order(operation_steps::started_at)
        .select(operation_steps::step)
        .load(&mut *conn)
        .await
        .unwrap()
}

async fn wildcard_and_apex_share_one_challenge_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let apex = delegated_domain().await;
    let wildcard = format!("*.{apex}");
    let id = format!("wild-{}", random_label());
    let res = app
        .provision(&id, &provision_body(&format!("{apex},{wildcard}")))
        .await;
    assert_eq!(res.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let res = app.bind(&id, "b", &bind_body()).await;
    assert_eq!(res.status(), 201);
    let bound: Value = res.json().await.unwrap();
    verify_credentials(&bound["credentials"], &[&apex, &wildcard]);
    assert!(txt_values(&challenge_txt_name(&apex)).is_empty());
}

async fn update_changes_domains_and_certificate(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let id = format!("upd-{}", random_label());
    app.provision(&id, &provision_body(&a)).await;
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let path = format!("/v2/service_instances/{id}?accepts_incomplete=true");
    let res = app
        .request(Method::PATCH, &path)
        .json(
            &serde_json::json!({"service_id": SERVICE_ID, "parameters": {"domains": [b.clone()]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let res = app.bind(&id, "after-update", &bind_body()).await;
    let bound: Value = res.json().await.unwrap();
    verify_credentials(&bound["credentials"], &[&b]);
    let fetched: Value = app
        .request(Method::GET, &format!("/v2/service_instances/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["parameters"]["domains"], serde_json::json!([b]));
    // The old domain is free again for another instance.
    let other = format!("other-{}", random_label());
    assert_eq!(
        app.provision(&other, &provision_body(&a)).await.status(),
        202
    );
}

both_backends!(
    certificate_lifecycle,
    wildcard_and_apex_share_one_challenge_name,
    update_changes_domains_and_certificate
);

/// Orphan mitigation: a DELETE in the middle of a provision cancels it and
/// removes what it had made.
async fn deprovision_overtakes_a_provision(backend: Backend) {
    let app = spawn_app_with(backend, &[("DNS_PROPAGATION_SLEEP_TIME", "5")]).await;
    let domain = delegated_domain().await;
    let id = format!("orphan-{}", random_label());
    assert_eq!(
        app.provision(&id, &provision_body(&domain)).await.status(),
        202
    );
    let txt = challenge_txt_name(&domain);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while txt_values(&txt).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the TXT record never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.deprovision(&id).await.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        txt_values(&txt).is_empty(),
        "the challenge record was left behind"
    );
    for table in [
        "certificates",
        "challenges",
        "dns_records",
        "instance_domains",
    ] {
        assert_eq!(app.count(table).await, 0, "{table} still has rows");
    }
}

/// A step whose operation moved on while it ran (a request ended it, or
/// another replica recorded that step) records nothing; the step the
/// operation waits for does.
async fn a_late_step_records_nothing(backend: Backend) {
    use domain_broker::db::models::now;
    use domain_broker::db::queries::{self, Progress};
    let app = spawn_app_with(backend, &[("DNS_PROPAGATION_SLEEP_TIME", "30")]).await;
    let domain = delegated_domain().await;
    let id = format!("late-{}", random_label());
    assert_eq!(
        app.provision(&id, &provision_body(&domain)).await.status(),
        202
    );
    app.wait_for_description(&id, "Waiting for DNS changes to propagate")
        .await;
    let mut conn = app.pool.get().await.unwrap();
    let op = queries::latest_operation(&mut conn, &id)
        .await
        .unwrap()
        .unwrap();
    let progress = |description| Progress {
        next_step: op.next_step + 1,
        attempts: 0,
        next_attempt_at: now() + chrono::Duration::seconds(60),
        description,
        last_error: None,
        at: now(),
    };
    let late = queries::record_progress(&mut conn, &op.id, op.next_step - 1, &progress("late"))
        .await
        .unwrap();
    assert!(!late, "an earlier step recorded over a later one");
    let stored = queries::operation(&mut conn, &op.id).await.unwrap();
    assert_eq!(stored.as_ref(), Some(&op));

    let recorded = queries::record_progress(&mut conn, &op.id, op.next_step, &progress("on time"))
        .await
        .unwrap();
    assert!(
        recorded,
        "the step the operation waits for was not recorded"
    );
    let recorded = queries::operation(&mut conn, &op.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (recorded.next_step, recorded.description.as_str()),
        (op.next_step + 1, "on time")
    );
    drop(conn);

    assert_eq!(app.deprovision(&id).await.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let mut conn = app.pool.get().await.unwrap();
    let ended = queries::operation(&mut conn, &op.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, "failed");
    let after = queries::record_progress(&mut conn, &op.id, ended.next_step, &progress("after"))
        .await
        .unwrap();
    assert!(!after, "an ended operation took progress");
    let stored = queries::operation(&mut conn, &op.id).await.unwrap();
    assert_eq!(stored, Some(ended));
}

/// Keys and account credentials are stored encrypted, never as PEM or JSON.
async fn secrets_are_encrypted_at_rest(backend: Backend) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use domain_broker::db::schema::{acme_accounts, certificates};
    let app = spawn_app(backend).await;
    let domain = delegated_domain().await;
    let id = format!("enc-{}", random_label());
    app.provision(&id, &provision_body(&domain)).await;
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let mut conn = app.pool.get().await.unwrap();
    let keys: Vec<Option<Vec<u8>>> = certificates::table
        .select(certificates::private_key_encrypted)
        .load(&mut *conn)
        .await
        .unwrap();
    let accounts: Vec<Vec<u8>> = acme_accounts::table
        .select(acme_accounts::credentials_encrypted)
        .load(&mut *conn)
        .await
        .unwrap();
    assert_eq!((keys.len(), accounts.len()), (1, 1));
    for blob in keys.into_iter().flatten().chain(accounts) {
        let text = String::from_utf8_lossy(&blob);
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("key_pkcs8"),
            "plaintext secret stored"
        );
    }
}

/// While an update runs, the instance answers 422 ConcurrencyError to
/// fetches, other updates and deletes.
async fn busy_instance_answers_concurrency_error(backend: Backend) {
    let app = spawn_app_with(backend, &[("DNS_PROPAGATION_SLEEP_TIME", "2")]).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let id = format!("busy-{}", random_label());
    let path = format!("/v2/service_instances/{id}");
    app.provision(&id, &provision_body(&a)).await;
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let patch = |domains: &str| {
        app.request(Method::PATCH, &format!("{path}?accepts_incomplete=true"))
            .json(
                &serde_json::json!({"service_id": SERVICE_ID, "parameters": {"domains": domains}}),
            )
            .send()
    };
    assert_eq!(patch(&b).await.unwrap().status(), 202);
    let res = app.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "ConcurrencyError"
    );
    let res = patch(&a).await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "ConcurrencyError"
    );
    // An update without domains is refused the same way.
    let res = app
        .request(Method::PATCH, &format!("{path}?accepts_incomplete=true"))
        .json(&serde_json::json!({"service_id": SERVICE_ID, "parameters": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = app.deprovision(&id).await;
    assert_eq!(res.status(), 422);
    // The domain being added is held already.
    let res = app
        .provision(&format!("rival-{}", random_label()), &provision_body(&b))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    assert_eq!(
        app.request(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

both_backends!(
    deprovision_overtakes_a_provision,
    a_late_step_records_nothing,
    secrets_are_encrypted_at_rest,
    busy_instance_answers_concurrency_error
);

/// A CA that no longer knows the stored account (Pebble restarted, say):
/// the broker registers again and the provision still succeeds.
async fn lost_acme_account_is_registered_again(backend: Backend) {
    use base64::Engine;
    use diesel_async::RunQueryDsl;
    use domain_broker::db::models::AcmeAccountRow;
    use domain_broker::db::schema::acme_accounts;
    let app = spawn_app(backend).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let credentials = serde_json::json!({
        "id": format!("{}/my-account/lost-{}", env("ACME_DIRECTORY_URL").trim_end_matches("/dir"), random_label()),
        "key_pkcs8": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.serialize_der()),
        "directory": env("ACME_DIRECTORY_URL"),
    });
    let secret = base64::engine::general_purpose::STANDARD
        .decode(env("DATABASE_ENCRYPTION_KEY"))
        .unwrap();
    let cipher = domain_broker::crypto::Cipher::new(&secret.try_into().unwrap());
    let row = AcmeAccountRow {
        id: "lost".into(),
        directory_url: env("ACME_DIRECTORY_URL"),
        credentials_encrypted: cipher.encrypt(credentials.to_string().as_bytes()),
        created_at: chrono::Utc::now().naive_utc(),
    };
    let mut conn = app.pool.get().await.unwrap();
    diesel::insert_into(acme_accounts::table)
        .values(&row)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let domain = delegated_domain().await;
    let id = format!("lost-{}", random_label());
    app.provision(&id, &provision_body(&domain)).await;
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(app.count("acme_accounts").await, 1);
}

both_backends!(lost_acme_account_is_registered_again);

/// When validation fails, last_operation says which domain and what the CA
/// said; a failed update leaves the instance usable, and a failed provision
/// is retried by repeating the request once the record is fixed.
async fn failures_are_explained_and_retryable(backend: Backend) {
    let app = spawn_app_with(backend, &[("DNS_PROPAGATION_SLEEP_TIME", "1")]).await;
    let root = env("DNS_ROOT_DOMAIN");
    let domain = delegated_domain().await;
    let id = format!("fail-{}", random_label());
    let body = provision_body(&domain);
    assert_eq!(app.provision(&id, &body).await.status(), 202);
    // The user breaks the delegation after the broker checked it.
    set_cname(
        &format!("_acme-challenge.{domain}"),
        &format!("elsewhere.{root}"),
    )
    .await;
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    let description = done["description"].as_str().unwrap();
    assert!(
        description.starts_with("Provisioning failed"),
        "{description}"
    );
    assert!(description.contains(&domain), "{description}");
    assert!(
        txt_values(&challenge_txt_name(&domain)).is_empty(),
        "records of a failed order stay"
    );

    // Fixed, and asked again: the same request retries.
    delegate(&domain).await;
    assert_eq!(app.provision(&id, &body).await.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");

    let other = delegated_domain().await;
    let res = app
        .request(
            Method::PATCH,
            &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
        )
        .json(&serde_json::json!({"service_id": SERVICE_ID, "parameters": {"domains": other}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    set_cname(
        &format!("_acme-challenge.{other}"),
        &format!("elsewhere.{root}"),
    )
    .await;
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["instance_usable"], true);
    assert_eq!(
        app.count("instance_domains").await,
        1,
        "the failed update kept its claim"
    );
    assert_eq!(done["update_repeatable"], true);
    assert!(
        done["description"].as_str().unwrap().contains(&other),
        "{done}"
    );
    let fetched: Value = app
        .request(Method::GET, &format!("/v2/service_instances/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["parameters"]["domains"], domain.as_str());
    let res = app.bind(&id, "still-works", &bind_body()).await;
    assert_eq!(res.status(), 201);
    let bound: Value = res.json().await.unwrap();
    assert_eq!(bound["credentials"]["domains"], serde_json::json!([domain]));
}

both_backends!(failures_are_explained_and_retryable);
