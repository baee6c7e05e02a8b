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

/// Every check of the CDN plan's parameters, with the original broker's
/// messages, and parameters a plan does not know.
async fn edge_parameters_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let domain = delegated_domain().await;
    let cdn = |extra: Value| {
        let mut b = provision_body(&domain);
        b["plan_id"] = json!(CDN_PLAN);
        b["parameters"]
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, expected) in [
        (
            json!({"origin": "not_a_host"}),
            "not_a_host is not a valid hostname",
        ),
        (json!({"origin": 7}), "'origin' must be a string."),
        (
            json!({"insecure_origin": true}),
            "'insecure_origin' cannot be set when using the default origin.",
        ),
        (
            json!({"origin": "app.example.com", "insecure_origin": "yes"}),
            "'insecure_origin' must be true or false.",
        ),
        (
            json!({"forward_headers": "x-a,,x-b"}),
            "Headers cannot be empty",
        ),
        (
            json!({"forward_headers": "x-a,x(b)"}),
            "x(b) contains these invalid characters: ()",
        ),
        (
            json!({"forward_cookies": ["a"]}),
            "'forward_cookies' must be a string.",
        ),
        (
            json!({"error_responses": ["404"]}),
            "error_response should be a dictionary of error code: response path",
        ),
        (
            json!({"error_responses": {"200": "/ok"}}),
            "error_response keys must be strings",
        ),
        (
            json!({"error_responses": {"404": 404}}),
            "error_response values must be strings",
        ),
        (
            json!({"error_responses": {"404": ""}}),
            "error_response values must not be empty",
        ),
        (
            json!({"error_responses": {"404": "404.html"}}),
            "error_response path must be a path starting with `/`",
        ),
        (
            json!({"cache_policy": "CachingFast"}),
            "'CachingFast' is not an allowed value for cache_policy.",
        ),
        (
            json!({"origin_request_policy": "Everything"}),
            "'Everything' is not an allowed value for origin_request_policy.",
        ),
        (
            json!({"path": "app/"}),
            "'path' must be empty or start with '/'",
        ),
        (
            json!({"colour": "blue"}),
            "Unknown parameter(s) for this plan: colour.",
        ),
    ] {
        refused(&app, cdn(extra), expected).await;
    }
    let mut alb = provision_body(&domain);
    alb["plan_id"] = json!(DOMAIN_PLAN);
    alb["parameters"]["origin"] = json!("app.example.com");
    refused(&app, alb, "Unknown parameter(s) for this plan: origin.").await;
}

both_backends!(
    malformed_requests,
    domains_held_by_another_instance,
    cname_problems_are_explained,
    edge_parameters_are_checked
);
