//! The `domain` plan against moto: the certificate in IAM, on the least
//! used listener of the shared load balancer, and ALIAS records to it;
//! an update that moves all of it; a deprovision that leaves nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::aws::{AwsWorld, DEFAULT_ORIGIN};
use crate::both_backends;
use crate::helpers::*;
use domain_broker::cloud::Cloud;
use domain_broker::cloud::alb::AliasTarget;
use domain_broker::cloud::certificates::StoredCertificate;
use domain_broker::cloud::cloudfront::DistributionSpec;
use domain_broker::config::{CertificateStore, DatabaseUrl, Env};
use domain_broker::dns::ChallengeRecords;
use domain_broker::domain::CdnSettings;

pub async fn spawn_app_in(backend: Backend, world: &AwsWorld, extra: &[(&str, &str)]) -> TestApp {
    let settings = world.settings();
    let mut vars: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(extra);
    spawn_app_with(backend, &vars).await
}

pub fn edge_body(plan: &str, parameters: Value) -> Value {
    json!({
        "service_id": SERVICE_ID,
        "plan_id": plan,
        "organization_guid": "org-1",
        "space_guid": "space-1",
        "parameters": parameters,
    })
}

fn alb_body(domains: &[&str]) -> Value {
    edge_body(DOMAIN_PLAN, json!({ "domains": domains }))
}

/// A and AAAA records, both to this target.
fn both_to(target: &str) -> Vec<(String, String)> {
    vec![
        ("A".to_string(), target.to_string()),
        ("AAAA".to_string(), target.to_string()),
    ]
}

async fn patch(app: &TestApp, id: &str, parameters: Value) -> reqwest::Response {
    app.request(
        Method::PATCH,
        &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
    )
    .json(&json!({"service_id": SERVICE_ID, "parameters": parameters}))
    .send()
    .await
    .unwrap()
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
    let app = spawn_app_in(backend, &world, &[("ALB_OVERLAP_SLEEP_TIME", "2")]).await;
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
    let expected = both_to(&world.load_balancer_dns);
    assert_eq!(world.aliases_of(&a).await, expected);
    assert!(txt_values(&challenge_txt_name(&a)).is_empty());

    // An update that changes the domains: a new certificate in place, the
    // old one gone from the listener and from IAM, and a's records gone.
    let res = patch(&app, &id, json!({"domains": [b.clone()]})).await;
    assert_eq!(res.status(), 202);
    // While DNS moves, the old certificate stays beside the new one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = app.last_operation(&id).await;
        if body["description"] == "Keeping the old certificate on the load balancer while DNS moves"
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no overlap: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let during = [
        world.listener_certificates(&world.listeners[0]).await,
        world.listener_certificates(&world.listeners[1]).await,
    ]
    .concat();
    assert!(during.contains(&first_arn), "{during:?}");
    assert_eq!(during.len(), 3, "other, old and new: {during:?}");
    assert_eq!(world.aliases_of(&b).await, expected);
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
    assert!(world.aliases_of(&a).await.is_empty());
    assert_eq!(world.aliases_of(&b).await, expected);

    // The same domains again: nothing to do.
    let res = patch(&app, &id, json!({"domains": [b.clone()]})).await;
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

/// `domain-with-cdn`: a distribution with the original's settings serving
/// the certificate, ALIAS records to it; a domain change with new headers;
/// a settings-only change that keeps the certificate; a deprovision that
/// leaves nothing.
async fn cdn_lifecycle(backend: Backend) {
    let world = AwsWorld::new().await;
    let app = spawn_app_in(backend, &world, &[]).await;
    let (a, b) = (delegated_domain().await, delegated_domain().await);
    let id = format!("cdn-{}", random_label());

    let res = app
        .provision(
            &id,
            &edge_body(
                CDN_PLAN,
                json!({"domains": a, "forward_cookies": "session"}),
            ),
        )
        .await;
    assert_eq!(res.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let certs = world.iam_certificates("cloudfront").await;
    assert_eq!(certs.len(), 1, "{certs:?}");
    let first_cert = certs[0].0.clone();
    let (dist_id, dist_domain, config) = world.distribution(&id).await.expect("a distribution");
    assert!(config.enabled);
    assert_eq!(config.aliases.as_ref().unwrap().items(), [a.as_str()]);
    let origin = &config.origins.as_ref().unwrap().items()[0];
    assert_eq!(origin.domain_name, DEFAULT_ORIGIN);
    assert_eq!(
        origin
            .custom_origin_config
            .as_ref()
            .unwrap()
            .origin_protocol_policy
            .as_str(),
        "https-only"
    );
    let viewer = config.viewer_certificate.as_ref().unwrap();
    assert_eq!(
        viewer.ssl_support_method.as_ref().unwrap().as_str(),
        "sni-only"
    );
    assert_eq!(
        viewer.minimum_protocol_version.as_ref().unwrap().as_str(),
        "TLSv1.2_2021"
    );
    assert!(viewer.iam_certificate_id.is_some());
    assert!(config.is_ipv6_enabled == Some(true));
    let behavior = config.default_cache_behavior.as_ref().unwrap();
    assert_eq!(
        behavior.viewer_protocol_policy.as_str(),
        "redirect-to-https"
    );
    #[allow(deprecated)]
    let forwarded = behavior.forwarded_values.as_ref().unwrap();
    assert_eq!(forwarded.headers.as_ref().unwrap().items(), ["HOST"]);
    let cookies = forwarded.cookies.as_ref().unwrap();
    assert_eq!(cookies.forward.as_str(), "whitelist");
    assert_eq!(
        cookies.whitelisted_names.as_ref().unwrap().items(),
        ["session"]
    );
    assert_eq!(world.aliases_of(&a).await, both_to(&dist_domain));

    // New domains and headers: a new certificate on the same distribution.
    let res = patch(
        &app,
        &id,
        json!({"domains": [b.clone()], "forward_headers": "x-custom"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let certs = world.iam_certificates("cloudfront").await;
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_ne!(certs[0].0, first_cert);
    let second_cert = certs[0].0.clone();
    let (same_id, _, config) = world.distribution(&id).await.expect("a distribution");
    assert_eq!(same_id, dist_id);
    assert_eq!(config.aliases.as_ref().unwrap().items(), [b.as_str()]);
    #[allow(deprecated)]
    let headers = config
        .default_cache_behavior
        .as_ref()
        .unwrap()
        .forwarded_values
        .as_ref()
        .unwrap()
        .headers
        .clone()
        .unwrap();
    assert_eq!(headers.items(), ["HOST", "X-CUSTOM"]);
    assert!(world.aliases_of(&a).await.is_empty());
    assert_eq!(world.aliases_of(&b).await, both_to(&dist_domain));

    // Settings only: the distribution changes, the certificate stays.
    let res = patch(&app, &id, json!({"error_responses": {"404": "/404.html"}})).await;
    assert_eq!(res.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(world.iam_certificates("cloudfront").await[0].0, second_cert);
    let (_, _, config) = world.distribution(&id).await.expect("a distribution");
    let errors = config.custom_error_responses.as_ref().unwrap();
    assert_eq!(errors.items()[0].error_code, 404);
    assert_eq!(
        errors.items()[0].response_page_path.as_deref(),
        Some("/404.html")
    );
    assert_eq!(config.aliases.as_ref().unwrap().items(), [b.as_str()]);
    // The same again: nothing to do.
    let res = patch(&app, &id, json!({"error_responses": {"404": "/404.html"}})).await;
    assert_eq!(res.status(), 200);
    // A bad setting, or another plan, is refused and changes nothing.
    let before = app.snapshot().await;
    let res = patch(&app, &id, json!({"cache_policy": "Nope"})).await;
    assert_eq!(res.status(), 400);
    let res = app
        .request(
            Method::PATCH,
            &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
        )
        .json(&json!({"service_id": SERVICE_ID, "plan_id": DOMAIN_PLAN}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let text = res.json::<Value>().await.unwrap()["description"].to_string();
    assert!(text.contains("cannot be changed"), "{text}");
    assert_eq!(app.snapshot().await, before);

    assert_eq!(app.deprovision(&id).await.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(world.distribution(&id).await.is_none());
    assert!(world.iam_certificates("cloudfront").await.is_empty());
    assert!(world.alias_records().await.is_empty());
    assert_eq!(app.count("cloud_resources").await, 0);
}

/// `CERTIFICATE_STORE=acm`: the certificate is imported into ACM, the
/// distribution serves it by ARN, and a deprovision deletes it.
async fn acm_certificate_store(backend: Backend) {
    let world = AwsWorld::new().await;
    let app = spawn_app_in(backend, &world, &[("CERTIFICATE_STORE", "acm")]).await;
    let domain = delegated_domain().await;
    let id = format!("acm-{}", random_label());
    let res = app
        .provision(&id, &edge_body(CDN_PLAN, json!({ "domains": domain })))
        .await;
    assert_eq!(res.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let made = world.acm_certificates(&domain).await;
    let (_, _, config) = world.distribution(&id).await.expect("a distribution");
    assert_eq!(
        config
            .viewer_certificate
            .unwrap()
            .acm_certificate_arn
            .as_ref(),
        Some(&made[0])
    );

    // A domain change puts the new certificate on the distribution and
    // deletes the old one.
    let other = delegated_domain().await;
    let res = patch(&app, &id, json!({ "domains": other })).await;
    assert_eq!(res.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    assert!(world.acm_certificates(&domain).await.is_empty());
    let made = world.acm_certificates(&other).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(world.iam_certificates("cloudfront").await.is_empty());
    let (_, _, config) = world.distribution(&id).await.expect("a distribution");
    let viewer = config.viewer_certificate.unwrap();
    assert_eq!(viewer.acm_certificate_arn.as_ref(), Some(&made[0]));
    // moto answers an empty IAMCertificateId where AWS leaves it out.
    assert_eq!(viewer.iam_certificate_id.unwrap_or_default(), "");

    assert_eq!(app.deprovision(&id).await.status(), 202);
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(world.acm_certificates(&other).await.is_empty());
    assert!(world.distribution(&id).await.is_none());
}

/// `DNS_PROVIDER=route53`: challenge records go into the Route53 zone.
/// An apex and its wildcard share a name, so values are added to and
/// removed from one set. Through the broker, the record is there while the
/// DNS wait runs; as Pebble asks BIND, not moto, validation then fails and
/// the record is removed.
async fn route53_challenge_records(backend: Backend) {
    let world = AwsWorld::new().await;
    let mut vars = broker_env(&DatabaseUrl::Sqlite("unused".into()), &[]);
    vars.extend(
        world
            .settings()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    vars.insert("DNS_PROVIDER".into(), "route53".into());
    let config = Env(|name: &str| vars.get(name).cloned()).config().unwrap();
    let cloud = std::sync::Arc::new(Cloud::new(&config.aws).await);
    let records = ChallengeRecords::new(&config.dns, Some(cloud)).unwrap();
    let name = challenge_txt_name(&new_domain());
    records.add_txt(&name, "first").await.unwrap();
    records.add_txt(&name, "second").await.unwrap();
    records.add_txt(&name, "first").await.unwrap();
    let mut values = world.txt_values(&name).await;
    values.sort();
    assert_eq!(values, ["first", "second"]);
    records.remove_txt(&name, "first").await.unwrap();
    assert_eq!(world.txt_values(&name).await, ["second"]);
    records.remove_txt(&name, "second").await.unwrap();
    records.remove_txt(&name, "second").await.unwrap();
    assert!(world.txt_values(&name).await.is_empty());

    let app = spawn_app_in(
        backend,
        &world,
        &[
            ("DNS_PROVIDER", "route53"),
            ("DNS_PROPAGATION_SLEEP_TIME", "2"),
        ],
    )
    .await;
    let domain = delegated_domain().await;
    let id = format!("r53-{}", random_label());
    assert_eq!(
        app.provision(&id, &provision_body(&domain)).await.status(),
        202
    );
    let name = challenge_txt_name(&domain);
    app.wait_for_description(&id, "Waiting for DNS changes to propagate")
        .await;
    assert_eq!(world.txt_values(&name).await.len(), 1);
    assert!(txt_values(&name).is_empty(), "nothing was written to BIND");
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(world.txt_values(&name).await.is_empty());
}

/// A distribution made for the instance that the broker did not get to
/// record (a crash between the two) is found by its caller reference and
/// made what the broker wants; no second one is made.
async fn an_unrecorded_distribution_is_adopted(backend: Backend) {
    let world = AwsWorld::new().await;
    let app = spawn_app_in(backend, &world, &[]).await;
    let domain = delegated_domain().await;
    let id = format!("adopt-{}", random_label());
    let settings = CdnSettings::parse(
        json!({"forward_cookies": ""}).as_object().unwrap(),
        crate::aws::DEFAULT_ORIGIN,
    )
    .unwrap();
    let earlier = StoredCertificate {
        arn: "arn:aws:iam::123456789012:server-certificate/earlier".into(),
        iam_id: Some("EARLIER".into()),
    };
    let made = world
        .operator()
        .await
        .create_distribution(&DistributionSpec {
            caller_reference: &id,
            aliases: &["old.example.com"],
            settings: &settings,
            certificate: &earlier,
        })
        .await
        .unwrap();
    let res = app
        .provision(&id, &edge_body(CDN_PLAN, json!({ "domains": domain })))
        .await;
    assert_eq!(res.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let found = world.distributions(&id).await;
    assert_eq!(found.len(), 1, "a second distribution was made");
    assert_eq!(found[0].0, made.id);
    let config = &found[0].2;
    assert_eq!(config.aliases.as_ref().unwrap().items(), [domain.as_str()]);
    assert_ne!(
        config
            .viewer_certificate
            .as_ref()
            .unwrap()
            .iam_certificate_id
            .as_deref(),
        Some("EARLIER")
    );
    assert_eq!(world.aliases_of(&domain).await, both_to(&made.domain_name));
}

/// Everything the broker made, deleted behind its back: a deprovision
/// still succeeds and forgets it all.
async fn deprovision_tolerates_what_is_already_gone(backend: Backend) {
    let world = AwsWorld::new().await;
    let app = spawn_app_in(backend, &world, &[]).await;
    let domain = delegated_domain().await;
    let id = format!("gone-{}", random_label());
    let res = app
        .provision(&id, &edge_body(CDN_PLAN, json!({ "domains": domain })))
        .await;
    assert_eq!(res.status(), 202);
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
    let operator = world.operator().await;
    let (dist_id, dist_domain, _) = world.distribution(&id).await.unwrap();
    operator.delete_distribution(&dist_id).await.unwrap();
    operator
        .delete_alias(
            &crate::aws::alias_name(&domain),
            &AliasTarget {
                dns_name: dist_domain,
                hosted_zone_id: "Z2FDTNDATAQYW2".into(),
            },
        )
        .await
        .unwrap();
    for (name, arn) in world.iam_certificates("cloudfront").await {
        operator
            .delete_certificate(CertificateStore::Iam, &name, &arn)
            .await
            .unwrap();
    }
    assert!(world.aliases_of(&domain).await.is_empty());

    // And a `domain` instance whose listener certificate and IAM
    // certificate are gone.
    let other = delegated_domain().await;
    let alb = format!("gone-alb-{}", random_label());
    let res = app.provision(&alb, &alb_body(&[&other])).await;
    assert_eq!(res.status(), 202);
    assert_eq!(app.wait_done(&alb).await["state"], "succeeded");
    for (name, arn) in world.iam_certificates("alb").await {
        for listener in &world.listeners {
            operator
                .remove_listener_certificate(listener, &arn)
                .await
                .unwrap();
        }
        operator
            .delete_certificate(CertificateStore::Iam, &name, &arn)
            .await
            .unwrap();
    }

    for id in [&id, &alb] {
        assert_eq!(app.deprovision(id).await.status(), 202);
        let done = app.wait_done(id).await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    assert_eq!(app.count("cloud_resources").await, 0);
    assert!(world.alias_records().await.is_empty());
}

both_backends!(
    an_unrecorded_distribution_is_adopted,
    deprovision_tolerates_what_is_already_gone,
    alb_lifecycle,
    cdn_lifecycle,
    acm_certificate_store,
    route53_challenge_records
);
