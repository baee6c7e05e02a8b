//! The rows of OSB.md: status codes, bodies, headers, version handling.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

async fn catalog_and_auth_and_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let catalog = || app.request(Method::GET, "/v2/catalog");
    let res = catalog().send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: Value = res.json().await.unwrap();
    let plans = body["services"][0]["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 3);
    assert_eq!(plans[0]["maximum_polling_duration"], 7200);
    assert_eq!(
        plans[0]["schemas"]["service_instance"]["create"]["parameters"]["$schema"],
        "http://json-schema.org/draft-04/schema#"
    );

    // An older platform sees only the fields it knows.
    let old: Value = app
        .request_as("2.13", Method::GET, "/v2/catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        old["services"][0]["plans"][0]
            .get("maximum_polling_duration")
            .is_none()
    );

    let url = format!("{}/v2/catalog", app.address);
    let client = reqwest::Client::new();
    // 401 before 412.
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = client
        .get(&url)
        .basic_auth("test-user", Some("wrong"))
        .header("X-Broker-API-Version", "2.17")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.json::<Value>().await.unwrap()["description"].is_string());
    for version in [None, Some(""), Some("1.0"), Some("2.12"), Some("banana")] {
        let mut req = client
            .get(&url)
            .basic_auth(&app.username, Some(&app.password));
        if let Some(v) = version {
            req = req.header("X-Broker-API-Version", v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 412, "version {version:?}");
        assert!(
            res.json::<Value>().await.unwrap()["description"]
                .as_str()
                .unwrap()
                .contains("2.13")
        );
    }

    // Request identity is echoed; a malformed originating identity is refused.
    let res = catalog()
        .header("X-Broker-API-Request-Identity", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["X-Broker-API-Request-Identity"], "req-42");
    let res = catalog()
        .header(
            "X-Broker-API-Originating-Identity",
            "cloudfoundry not-base64!",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let good = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        r#"{"user_id":"u-1"}"#,
    );
    let res = catalog()
        .header(
            "X-Broker-API-Originating-Identity",
            format!("cloudfoundry {good}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Health endpoints live outside /v2 and need no credentials.
    assert_eq!(
        client
            .get(format!("{}/ping", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let health = client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

async fn provision_rules(backend: Backend) {
    // A propagation wait keeps the first provision in progress for a while.
    let app = spawn_app_with(backend, &[("DNS_PROPAGATION_SLEEP_TIME", "2")]).await;
    let domain = delegated_domain().await;
    let id = format!("osb {}", random_label()); // ids are any string
    let path = format!("/v2/service_instances/{}", urlencode(&id));
    let before = app.snapshot().await;

    // 422 AsyncRequired comes before the body is read.
    let res = app
        .request(Method::PUT, &path)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "AsyncRequired");
    assert_eq!(app.snapshot().await, before);

    let res = app
        .request(Method::PUT, &format!("{path}?accepts_incomplete=true"))
        .json(&provision_body(&domain))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let op = res.json::<Value>().await.unwrap()["operation"]
        .as_str()
        .unwrap()
        .to_string();

    // An identical repeat while it runs: 202 with the same operation.
    let res = app
        .request(Method::PUT, &format!("{path}?accepts_incomplete=true"))
        .json(&provision_body(&domain))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["operation"], op.as_str());

    // Still provisioning: GET answers 404; last_operation says in progress with Retry-After.
    assert_eq!(
        app.request(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let res = app
        .request(
            Method::GET,
            &format!("{path}/last_operation?operation={op}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["state"], "in progress");
    assert!(!body["description"].as_str().unwrap().is_empty());

    // Same id, other attributes: 409, decided before any plan check.
    let mut other = provision_body(&domain);
    other["plan_id"] = json!(CDN_PLAN);
    let res = app
        .request(Method::PUT, &format!("{path}?accepts_incomplete=true"))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);

    // A literal operation name falls back to the latest operation.
    let res = app
        .request(
            Method::GET,
            &format!("{path}/last_operation?operation=provision"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded");
    // An identical repeat after success: 200.
    let res = app
        .request(Method::PUT, &format!("{path}?accepts_incomplete=true"))
        .json(&provision_body(&domain))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let res = app.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["service_id"], SERVICE_ID);
    assert_eq!(body["plan_id"], CERT_PLAN);
    assert_eq!(body["parameters"]["domains"], domain.as_str());

    // Unknown fields are ignored; org and space may come from context.
    let id2 = format!("ctx-{}", random_label());
    let d2 = delegated_domain().await;
    let body = json!({
        "service_id": SERVICE_ID, "plan_id": CERT_PLAN, "surprise": true,
        "context": {"platform": "cloudfoundry", "organization_guid": "o", "space_guid": "s"},
        "parameters": {"domains": [d2]},
    });
    assert_eq!(app.provision(&id2, &body).await.status(), 202);
    assert_eq!(app.wait_done(&id2).await["state"], "succeeded");
}

async fn update_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let domain = delegated_domain().await;
    let id = format!("u-{}", random_label());
    let path = format!("/v2/service_instances/{id}");
    app.provision(&id, &provision_body(&domain)).await;
    app.wait_done(&id).await;
    let before = app.snapshot().await;
    let patch = |body: Value, asynchronous: bool| {
        let q = if asynchronous {
            "?accepts_incomplete=true"
        } else {
            ""
        };
        app.request(Method::PATCH, &format!("{path}{q}"))
            .json(&body)
            .send()
    };
    let res = patch(json!({"service_id": SERVICE_ID}), false)
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "AsyncRequired");
    let res = patch(
        json!({"service_id": SERVICE_ID, "plan_id": DOMAIN_PLAN}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    assert!(
        res.json::<Value>().await.unwrap()["description"]
            .as_str()
            .unwrap()
            .contains("cannot be changed")
    );
    // No change: 200 {}.
    let res = patch(json!({"service_id": SERVICE_ID, "parameters": {}}), true)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "{}");
    let res = patch(
        json!({"service_id": SERVICE_ID, "parameters": {"domains": domain}}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = patch(
        json!({"service_id": SERVICE_ID, "parameters": {"domains": "bad_domain.test"}}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let res = patch(json!({"parameters": {}}), true).await.unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .request(
            Method::PATCH,
            &format!(
                "/v2/service_instances/nope-{}?accepts_incomplete=true",
                random_label()
            ),
        )
        .json(&json!({"service_id": SERVICE_ID}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.snapshot().await, before);
}

async fn deprovision_and_polling_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = format!("/v2/service_instances/none-{}", random_label());
    let res = app
        .request(
            Method::DELETE,
            &format!(
                "{unknown}?accepts_incomplete=true&service_id={SERVICE_ID}&plan_id={CERT_PLAN}"
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    assert_eq!(res.text().await.unwrap(), "{}");
    let res = app
        .request(Method::GET, &format!("{unknown}/last_operation"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);

    let domain = delegated_domain().await;
    let id = format!("d-{}", random_label());
    let path = format!("/v2/service_instances/{id}");
    app.provision(&id, &provision_body(&domain)).await;
    app.wait_done(&id).await;
    let before = app.snapshot().await;
    for query in [
        format!("?accepts_incomplete=true&plan_id={CERT_PLAN}"),
        format!("?accepts_incomplete=true&service_id={SERVICE_ID}"),
        format!("?accepts_incomplete=true&service_id=&plan_id={CERT_PLAN}"),
        format!("?accepts_incomplete=true&service_id=nope&plan_id={CERT_PLAN}"),
    ] {
        let res = app
            .request(Method::DELETE, &format!("{path}{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
    }
    let res = app
        .request(
            Method::DELETE,
            &format!("{path}?service_id={SERVICE_ID}&plan_id={CERT_PLAN}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = app
        .request(
            Method::GET,
            &format!("{path}/last_operation?plan_id=not-a-plan"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.snapshot().await, before);

    let res = app.deprovision(&id).await;
    assert_eq!(res.status(), 202);
    let op = res.json::<Value>().await.unwrap()["operation"]
        .as_str()
        .unwrap()
        .to_string();
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded");
    let res = app
        .request(
            Method::GET,
            &format!("{path}/last_operation?operation={op}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.request(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(app.deprovision(&id).await.status(), 410);
    // The same id can be provisioned again.
    assert_eq!(
        app.provision(&id, &provision_body(&domain)).await.status(),
        202
    );
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
}

async fn binding_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let domain = delegated_domain().await;
    let id = format!("b-{}", random_label());
    let bindings = format!("/v2/service_instances/{id}/service_bindings");
    // Not provisioned yet: no binding.
    app.provision(&id, &provision_body(&domain)).await;
    app.wait_done(&id).await;
    let before = app.snapshot().await;

    for body in [
        json!({"service_id": SERVICE_ID, "plan_id": DOMAIN_PLAN}),
        json!({"service_id": "other", "plan_id": CERT_PLAN}),
        json!({"plan_id": CERT_PLAN}),
        json!({"service_id": SERVICE_ID, "plan_id": CERT_PLAN, "parameters": {"x": 1}}),
        json!([1, 2]),
    ] {
        let res = app.bind(&id, "bad", &body).await;
        assert_eq!(res.status(), 400, "{body}");
    }
    let res = app
        .request(Method::PUT, &format!("{bindings}/bad"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(app.snapshot().await, before);

    let res = app.bind(&id, "b1", &bind_body()).await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    let res = app.bind(&id, "b1", &bind_body()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), first);
    let mut other = bind_body();
    other["bind_resource"]["app_guid"] = json!("app-2");
    assert_eq!(app.bind(&id, "b1", &other).await.status(), 409);

    let res = app
        .request(Method::GET, &format!("{bindings}/b1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["credentials"],
        first["credentials"]
    );
    assert_eq!(
        app.request(Method::GET, &format!("{bindings}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let res = app
        .request(Method::GET, &format!("{bindings}/b1/last_operation"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "succeeded");

    // Older platforms get no binding metadata.
    let old: Value = app
        .request_as("2.14", Method::GET, &format!("{bindings}/b1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(old.get("metadata").is_none());

    let unbind = |b: &str, q: &str| {
        app.request(Method::DELETE, &format!("{bindings}/{b}{q}"))
            .send()
    };
    assert_eq!(
        unbind("b1", &format!("?plan_id={CERT_PLAN}"))
            .await
            .unwrap()
            .status(),
        400
    );
    let q = format!("?service_id={SERVICE_ID}&plan_id={CERT_PLAN}");
    let res = unbind("b1", &q).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "{}");
    assert_eq!(unbind("b1", &q).await.unwrap().status(), 410);
    assert_eq!(
        app.request(Method::GET, &format!("{bindings}/b1/last_operation"))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
}

/// An AWS plan the operator has not set up is refused, naming what is
/// missing.
async fn edge_plans_need_their_settings(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("ROUTE53_ZONE_ID", ""),
            ("ALB_LISTENER_ARNS", ""),
            ("DEFAULT_CLOUDFRONT_ORIGIN", ""),
        ],
    )
    .await;
    let before = app.snapshot().await;
    for (plan, expected) in [
        (
            DOMAIN_PLAN,
            "has not set ROUTE53_ZONE_ID and ALB_LISTENER_ARNS",
        ),
        (
            CDN_PLAN,
            "has not set ROUTE53_ZONE_ID and DEFAULT_CLOUDFRONT_ORIGIN",
        ),
    ] {
        let mut body = provision_body(&delegated_domain().await);
        body["plan_id"] = json!(plan);
        let res = app
            .provision(&format!("edge-{}", random_label()), &body)
            .await;
        assert_eq!(res.status(), 400);
        let text = res.json::<Value>().await.unwrap()["description"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains(expected), "{text}");
    }
    assert_eq!(app.snapshot().await, before);
}

fn urlencode(s: &str) -> String {
    s.replace(' ', "%20")
}

both_backends!(
    catalog_and_auth_and_version,
    provision_rules,
    update_rules,
    deprovision_and_polling_rules,
    binding_rules,
    edge_plans_need_their_settings,
);

/// Only the certificate plan is bindable. A provisioned row stands in for
/// an edge-plan instance, which keeps this test free of AWS.
async fn edge_plan_instances_are_not_bindable(backend: Backend) {
    use diesel_async::RunQueryDsl;
    use domain_broker::db::models::InstanceRow;
    use domain_broker::db::schema::service_instances;
    let app = spawn_app(backend).await;
    let id = format!("edge-{}", random_label());
    let now = chrono::Utc::now().naive_utc();
    let row = InstanceRow {
        id: id.clone(),
        service_id: SERVICE_ID.into(),
        plan_id: DOMAIN_PLAN.into(),
        organization_guid: "o".into(),
        space_guid: "s".into(),
        context: None,
        parameters: "{}".into(),
        domains: "[\"edge.example.com\"]".into(),
        state: "provisioned".into(),
        current_certificate_id: None,
        created_at: now,
        updated_at: now,
        lease_owner: None,
        lease_expires_at: None,
    };
    let mut conn = app.pool.get().await.unwrap();
    diesel::insert_into(service_instances::table)
        .values(&row)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let before = app.snapshot().await;
    let res = app
        .bind(
            &id,
            "b",
            &json!({"service_id": SERVICE_ID, "plan_id": DOMAIN_PLAN}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let text = res.json::<Value>().await.unwrap()["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("not bindable"), "{text}");
    assert_eq!(app.snapshot().await, before);
    // Unknown instance: 404, and no binding.
    let res = app
        .bind(&format!("nope-{}", random_label()), "b", &bind_body())
        .await;
    assert_eq!(res.status(), 404);
}

both_backends!(edge_plan_instances_are_not_bindable);
