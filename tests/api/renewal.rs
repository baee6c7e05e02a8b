//! Renewal: certificates due for renewal are replaced by the Supervisor's
//! sweep, capped and spread out. A certificate is made "old" by moving its
//! expiry in the store, as if time had passed.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_broker::db::schema::{certificates, operations};
use reqwest::Method;
use serde_json::{Value, json};

use crate::aws::AwsWorld;
use crate::both_backends;
use crate::edge::{edge_body, spawn_app_in};
use crate::helpers::*;

const FAST_SWEEP: &[(&str, &str)] = &[
    ("RENEWAL_CHECK_INTERVAL_SECONDS", "1"),
    ("RENEWAL_JITTER_SECONDS", "0"),
];

/// Makes every certificate of the store a year old, expiring in a day.
async fn age_certificates(app: &TestApp) {
    let now = chrono::Utc::now().naive_utc();
    let mut conn = app.pool.get().await.unwrap();
    diesel::update(certificates::table)
        .set((
            certificates::issued_at.eq(Some(now - chrono::Duration::days(365))),
            certificates::expires_at.eq(Some(now + chrono::Duration::days(1))),
        ))
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn renewals(app: &TestApp, state: Option<&str>) -> i64 {
    let mut conn = app.pool.get().await.unwrap();
    let mut query = operations::table
        .filter(operations::kind.eq("renew"))
        .into_boxed();
    if let Some(state) = state {
        query = query.filter(operations::state.eq(state.to_string()));
    }
    query.count().get_result(&mut *conn).await.unwrap()
}

async fn wait_for_renewals(app: &TestApp, succeeded: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while renewals(app, Some("succeeded")).await < succeeded {
        assert_eq!(renewals(app, Some("failed")).await, 0, "a renewal failed");
        assert!(Instant::now() < deadline, "renewals did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn leaf(binding: &Value) -> String {
    let chain = binding["credentials"]["certificate"].as_str().unwrap();
    chain[..chain.find("-----END CERTIFICATE-----").unwrap()].to_string()
}

async fn renewal_replaces_the_certificate(backend: Backend) {
    let app = spawn_app_with(backend, FAST_SWEEP).await;
    let domain = delegated_domain().await;
    let id = format!("renew-{}", random_label());
    app.provision(&id, &provision_body(&domain)).await;
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let before: Value = app
        .bind(&id, "old", &bind_body())
        .await
        .json()
        .await
        .unwrap();
    // Nothing is due yet: a few sweeps pass without a renewal.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(renewals(&app, None).await, 0);

    age_certificates(&app).await;
    wait_for_renewals(&app, 1).await;
    let (_, last) = app.last_operation(&id).await;
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["description"], "The certificate has been renewed.");

    let after: Value = app
        .bind(&id, "new", &bind_body())
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(
        leaf(&after),
        leaf(&before),
        "a new binding got the old certificate"
    );
    assert_ne!(
        after["credentials"]["private_key"], before["credentials"]["private_key"],
        "the key was reused"
    );
    assert_eq!(after["credentials"]["domains"], serde_json::json!([domain]));
    // The renewed certificate is not due: no second renewal follows.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(renewals(&app, None).await, 1);
    // An existing binding keeps what it was given.
    let old: Value = app
        .request(
            Method::GET,
            &format!("/v2/service_instances/{id}/service_bindings/old"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(leaf(&old), leaf(&before));
    assert!(txt_values(&challenge_txt_name(&domain)).is_empty());
}

async fn renewals_respect_the_cap(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("RENEWAL_CHECK_INTERVAL_SECONDS", "1"),
            ("RENEWAL_JITTER_SECONDS", "1"),
            ("MAX_CONCURRENT_ORDERS", "2"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = format!("cap-{}", random_label());
        app.provision(&id, &provision_body(&delegated_domain().await))
            .await;
        ids.push(id);
    }
    for id in &ids {
        assert_eq!(app.wait_done(id).await["state"], "succeeded");
    }
    age_certificates(&app).await;
    wait_for_renewals(&app, 5).await;
    assert_eq!(
        renewals(&app, None).await,
        5,
        "an instance was renewed twice"
    );
    // From the recorded start and end of each renewal: never more than two
    // at once.
    let mut conn = app.pool.get().await.unwrap();
    let spans: Vec<(chrono::NaiveDateTime, Option<chrono::NaiveDateTime>)> = operations::table
        .filter(operations::kind.eq("renew"))
        .select((operations::created_at, operations::finished_at))
        .load(&mut *conn)
        .await
        .unwrap();
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, end)| s <= start && end.is_some_and(|e| e > *start))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        (1..=2).contains(&most),
        "{most} renewals ran at once with a cap of 2"
    );
}

/// The AWS plans renew too: a `domain` instance's listener and a
/// `domain-with-cdn` instance's distribution get the new certificate, and
/// the old one leaves AWS.
async fn edge_renewals_swap_the_certificate(backend: Backend) {
    let world = AwsWorld::new().await;
    let app = spawn_app_in(backend, &world, FAST_SWEEP).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let (alb, cdn) = (
        format!("renew-alb-{}", random_label()),
        format!("renew-cdn-{}", random_label()),
    );
    app.provision(&alb, &edge_body(DOMAIN_PLAN, json!({ "domains": a })))
        .await;
    app.provision(&cdn, &edge_body(CDN_PLAN, json!({ "domains": b })))
        .await;
    assert_eq!(app.wait_done(&alb).await["state"], "succeeded");
    assert_eq!(app.wait_done(&cdn).await["state"], "succeeded");
    let old_alb = world.iam_certificates("alb").await;
    let old_cdn = world.iam_certificates("cloudfront").await;
    let (dist_id, dist_domain, _) = world.distribution(&cdn).await.unwrap();
    assert_eq!((old_alb.len(), old_cdn.len()), (1, 1));

    age_certificates(&app).await;
    wait_for_renewals(&app, 2).await;
    let new_alb = world.iam_certificates("alb").await;
    let new_cdn = world.iam_certificates("cloudfront").await;
    assert_eq!(
        (new_alb.len(), new_cdn.len()),
        (1, 1),
        "{new_alb:?} {new_cdn:?}"
    );
    assert_ne!(new_alb, old_alb);
    assert_ne!(new_cdn, old_cdn);
    let on_listeners = [
        world.listener_certificates(&world.listeners[0]).await,
        world.listener_certificates(&world.listeners[1]).await,
    ]
    .concat();
    assert_eq!(on_listeners, vec![new_alb[0].1.clone()]);
    let (same_id, _, config) = world.distribution(&cdn).await.unwrap();
    assert_eq!(same_id, dist_id);
    assert_eq!(config.aliases.unwrap().items(), [b.as_str()]);
    let lb = world.load_balancer_dns.clone();
    assert_eq!(
        world.aliases_of(&a).await,
        [("A".into(), lb.clone()), ("AAAA".into(), lb)]
    );
    assert_eq!(
        world.aliases_of(&b).await,
        [
            ("A".into(), dist_domain.clone()),
            ("AAAA".into(), dist_domain)
        ]
    );
    // The renewed certificates are not due: no more renewals follow.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(renewals(&app, None).await, 2);
}

both_backends!(
    renewal_replaces_the_certificate,
    renewals_respect_the_cap,
    edge_renewals_swap_the_certificate
);
