//! The `domain` plan against moto: the certificate in IAM, on the least
//! used listener of the shared load balancer, and ALIAS records to it;
//! an update that moves all of it; a deprovision that leaves nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::aws::{AwsWorld, alias_name};
use crate::both_backends;
use crate::helpers::*;

pub async fn spawn_app_in(backend: Backend, world: &AwsWorld, extra: &[(&str, &str)]) -> TestApp {
    let settings = world.settings();
    let mut vars: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(extra);
    spawn_app_with(backend, &vars).await
}

fn alb_body(domains: &[&str]) -> Value {
    json!({
        "service_id": SERVICE_ID,
        "plan_id": DOMAIN_PLAN,
        "organization_guid": "org-1",
        "space_guid": "space-1",
        "parameters": {"domains": domains},
    })
}

fn aliases_of(records: &[(String, String, String)], domain: &str) -> Vec<(String, String)> {
    let name = alias_name(domain);
    let mut found: Vec<(String, String)> = records
        .iter()
        .filter(|(n, _, _)| *n == name)
        .map(|(_, t, target)| (t.clone(), target.clone()))
        .collect();
    found.sort();
    found
}

async fn alb_lifecycle(backend: Backend) {
    let world = AwsWorld::new().await;
    // The first listener already carries a certificate: the broker must
    // choose the second, the least used.
    let busy = world
        .cloud
        .add_listener_certificate(
            &world.listeners[0],
            "arn:aws:iam::123456789012:server-certificate/other",
        )
        .await
        .unwrap();
    assert_eq!(busy.dns_name, world.load_balancer_dns);
    let app = spawn_app_in(backend, &world, &[]).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let id = format!("alb-{}", random_label());

    let res = app.provision(&id, &alb_body(&[&a])).await;
    assert_eq!(res.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let certs = world.iam_certificates("alb").await;
    assert_eq!(certs.len(), 1, "{certs:?}");
    let (name, first_arn) = certs[0].clone();
    assert!(name.starts_with(&format!("{id}-")), "{name}");
    assert_eq!(
        world.listener_certificates(&world.listeners[1]).await,
        vec![first_arn.clone()]
    );
    let records = world.alias_records().await;
    let expected = |d: &str| {
        let _ = d;
        vec![
            ("A".to_string(), world.load_balancer_dns.clone()),
            ("AAAA".to_string(), world.load_balancer_dns.clone()),
        ]
    };
    assert_eq!(aliases_of(&records, &a), expected(&a), "{records:?}");
    assert!(txt_values(&challenge_txt_name(&a)).is_empty());

    // An update that changes the domains: a new certificate in place, the
    // old one gone from the listener and from IAM, and a's records gone.
    let path = format!("/v2/service_instances/{id}?accepts_incomplete=true");
    let res = app
        .request(Method::PATCH, &path)
        .json(&json!({"service_id": SERVICE_ID, "parameters": {"domains": [b.clone()]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let certs = world.iam_certificates("alb").await;
    assert_eq!(certs.len(), 1, "{certs:?}");
    let second_arn = certs[0].1.clone();
    assert_ne!(second_arn, first_arn);
    let on_listeners = [
        world.listener_certificates(&world.listeners[0]).await,
        world.listener_certificates(&world.listeners[1]).await,
    ]
    .concat();
    assert!(on_listeners.contains(&second_arn), "{on_listeners:?}");
    assert!(!on_listeners.contains(&first_arn), "{on_listeners:?}");
    let records = world.alias_records().await;
    assert!(aliases_of(&records, &a).is_empty(), "{records:?}");
    assert_eq!(aliases_of(&records, &b), expected(&b), "{records:?}");

    // The same domains again: nothing to do.
    let res = app
        .request(Method::PATCH, &path)
        .json(&json!({"service_id": SERVICE_ID, "parameters": {"domains": [b.clone()]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "{}");

    assert_eq!(app.deprovision(&id).await.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(world.iam_certificates("alb").await.is_empty());
    assert!(
        world
            .listener_certificates(&world.listeners[1])
            .await
            .is_empty()
    );
    assert_eq!(
        world.listener_certificates(&world.listeners[0]).await,
        vec!["arn:aws:iam::123456789012:server-certificate/other".to_string()]
    );
    assert!(world.alias_records().await.is_empty());
    assert!(txt_values(&challenge_txt_name(&b)).is_empty());
    assert_eq!(app.count("cloud_resources").await, 0);
}

both_backends!(alb_lifecycle);
