//! Malformed and hostile input: the right status, a message a person can act
//! on, and nothing stored.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// Sends a provision, expects 400 with `expected` in the description, and
/// checks that no row changed.
async fn refused(app: &TestApp, body: Value, expected: &str) {
    let before = app.snapshot().await;
    let res = app
        .provision(&format!("bad-{}", random_label()), &body)
        .await;
    assert_eq!(res.status(), 400, "{body}");
    let description = res.json::<Value>().await.unwrap()["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description.contains(expected),
        "{description:?} lacks {expected:?}"
    );
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused request changed the store"
    );
}

async fn malformed_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    let domain = delegated_domain().await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = provision_body(&domain);
        f(&mut b);
        b
    };
    refused(
        &app,
        with(&|b| b["parameters"] = json!({})),
        "'domains' parameter required.",
    )
    .await;
    refused(
        &app,
        with(&|b| b["parameters"] = json!({"domains": ""})),
        "'domains' parameter required.",
    )
    .await;
    refused(
        &app,
        with(&|b| {
            b.as_object_mut().unwrap().remove("parameters");
        }),
        "'domains' parameter required.",
    )
    .await;
    refused(
        &app,
        with(&|b| b["parameters"] = json!({"domains": 42})),
        "'domains' must be",
    )
    .await;
    refused(
        &app,
        with(&|b| b["parameters"] = json!("domains")),
        "'parameters' must be a JSON object",
    )
    .await;
    refused(
        &app,
        with(&|b| b["parameters"] = json!({"domains": "ok.example.com, no_way.example.com"})),
        "no_way.example.com",
    )
    .await;
    refused(
        &app,
        with(&|b| b["parameters"] = json!({"domains": "10.0.0.1"})),
        "10.0.0.1",
    )
    .await;
    refused(
        &app,
        with(&|b| b["parameters"] = json!({"domains": domain, "origin": "x"})),
        "Unknown parameter(s) for this plan: origin",
    )
    .await;
    refused(
        &app,
        with(&|b| {
            b.as_object_mut().unwrap().remove("service_id");
        }),
        "'service_id' is required.",
    )
    .await;
    refused(
        &app,
        with(&|b| b["plan_id"] = json!(7)),
        "'plan_id' must be a string.",
    )
    .await;
    refused(
        &app,
        with(&|b| b["service_id"] = json!("no-such-service")),
        "Unknown service_id",
    )
    .await;
    refused(
        &app,
        with(&|b| b["plan_id"] = json!("no-such-plan")),
        "Unknown plan_id",
    )
    .await;
    refused(
        &app,
        with(&|b| {
            b.as_object_mut().unwrap().remove("organization_guid");
        }),
        "'organization_guid' is required.",
    )
    .await;
    refused(
        &app,
        with(&|b| {
            b.as_object_mut().unwrap().remove("space_guid");
        }),
        "'space_guid' is required.",
    )
    .await;
    refused(
        &app,
        with(&|b| b["context"] = json!("cf")),
        "'context' must be a JSON object.",
    )
    .await;

    let path = format!(
        "/v2/service_instances/raw-{}?accepts_incomplete=true",
        random_label()
    );
    for raw in ["{", "[]", "\"text\"", "", "{\"service_id\": }"] {
        let res = app
            .request(Method::PUT, &path)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{raw:?}");
        assert!(res.json::<Value>().await.unwrap()["description"].is_string());
    }
    assert_eq!(app.count("service_instances").await, 0);
}

async fn domains_held_by_another_instance(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let first = format!("first-{}", random_label());
    assert_eq!(
        app.provision(&first, &provision_body(&a)).await.status(),
        202
    );
    refused(
        &app,
        provision_body(&format!("{b},{a}")),
        &format!("An external domain service already exists for the following domains: {a}"),
    )
    .await;
    app.wait_done(&first).await;
}

async fn cname_problems_are_explained(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = env("DNS_ROOT_DOMAIN");
    let missing = new_domain();
    refused(
        &app,
        provision_body(&missing),
        &format!("CNAME _acme-challenge.{missing} should point to _acme-challenge.{missing}.{root}, but it does not exist."),
    )
    .await;
    let wrong = new_domain();
    set_cname(&format!("_acme-challenge.{wrong}"), "somewhere.else.test").await;
    refused(
        &app,
        provision_body(&wrong),
        "but it is set incorrectly to somewhere.else.test.",
    )
    .await;
    let looped = new_domain();
    let (x, y) = (format!("x-{looped}"), format!("y-{looped}"));
    set_cname(&format!("_acme-challenge.{looped}"), &x).await;
    set_cname(&x, &y).await;
    set_cname(&y, &x).await;
    refused(&app, provision_body(&looped), "CNAME loop").await;
    // A chain that ends at the broker's name is fine.
    let chained = new_domain();
    let hop = format!("hop-{chained}");
    set_cname(&format!("_acme-challenge.{chained}"), &hop).await;
    set_cname(&hop, &format!("_acme-challenge.{chained}.{root}")).await;
    let id = format!("chain-{}", random_label());
    assert_eq!(
        app.provision(&id, &provision_body(&chained)).await.status(),
        202
    );
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
}

both_backends!(
    malformed_requests,
    domains_held_by_another_instance,
    cname_problems_are_explained
);
