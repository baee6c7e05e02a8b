//! A world of its own in moto for one test: a hosted zone for the broker's
//! domain, a load balancer with two HTTPS listeners, and an IAM path
//! prefix. Tests look at AWS through these clients, as an operator would.

use aws_sdk_cloudfront::types::DistributionConfig;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, LoadBalancerTypeEnum, ProtocolEnum,
};
use aws_sdk_route53::types::{ResourceRecordSet, RrType};
use domain_broker::cloud::Cloud;
use domain_broker::config::AwsConfig;

use crate::helpers::{env, random_label};

/// The platform's router, as the CDN plan's default origin.
pub const DEFAULT_ORIGIN: &str = "apps.platform.test";

pub struct AwsWorld {
    pub cloud: Cloud,
    pub zone_id: String,
    pub listeners: Vec<String>,
    pub load_balancer_dns: String,
    pub prefix: String,
}

impl AwsWorld {
    pub async fn new() -> AwsWorld {
        let cloud = Cloud::new(&AwsConfig {
            endpoint_url: Some(env("AWS_ENDPOINT_URL")),
            region: Some(env("AWS_REGION")),
            ..AwsConfig::default()
        })
        .await;
        let label = random_label();
        let zone = cloud
            .route53
            .create_hosted_zone()
            .name(env("DNS_ROOT_DOMAIN"))
            .caller_reference(&label)
            .send()
            .await
            .unwrap();
        let zone_id = zone
            .hosted_zone
            .unwrap()
            .id
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let subnets: Vec<String> = env("TEST_AWS_SUBNETS")
            .split(',')
            .map(str::to_string)
            .collect();
        let lb = cloud
            .elb
            .create_load_balancer()
            .name(format!("t-{label}"))
            .r#type(LoadBalancerTypeEnum::Application)
            .set_subnets(Some(subnets))
            .send()
            .await
            .unwrap()
            .load_balancers
            .unwrap()
            .remove(0);
        let tg = cloud
            .elb
            .create_target_group()
            .name(format!("t-{label}"))
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(lb.vpc_id.clone().unwrap())
            .send()
            .await
            .unwrap()
            .target_groups
            .unwrap()
            .remove(0);
        let mut listeners = Vec::new();
        for port in [443, 8443] {
            let listener = cloud
                .elb
                .create_listener()
                .load_balancer_arn(lb.load_balancer_arn.clone().unwrap())
                .protocol(ProtocolEnum::Https)
                .port(port)
                .default_actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::Forward)
                        .target_group_arn(tg.target_group_arn.clone().unwrap())
                        .build(),
                )
                .certificates(
                    Certificate::builder()
                        .certificate_arn(format!(
                            "arn:aws:iam::123456789012:server-certificate/default-{label}"
                        ))
                        .build(),
                )
                .send()
                .await
                .unwrap();
            listeners.push(listener.listeners.unwrap().remove(0).listener_arn.unwrap());
        }
        AwsWorld {
            cloud,
            zone_id,
            listeners,
            load_balancer_dns: lb.dns_name.unwrap(),
            prefix: format!("test-{label}"),
        }
    }

    /// A client with this world's zone, to change things behind the
    /// broker's back.
    pub async fn operator(&self) -> Cloud {
        Cloud::new(&AwsConfig {
            endpoint_url: Some(env("AWS_ENDPOINT_URL")),
            region: Some(env("AWS_REGION")),
            route53_zone_id: Some(self.zone_id.clone()),
            ..AwsConfig::default()
        })
        .await
    }

    /// The broker settings that point at this world.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ROUTE53_ZONE_ID", self.zone_id.clone()),
            ("ALB_LISTENER_ARNS", self.listeners.join(",")),
            ("IAM_CERTIFICATE_PREFIX", self.prefix.clone()),
            ("ALB_OVERLAP_SLEEP_TIME", "0".into()),
            ("AWS_POLL_WAIT_TIME_IN_SECONDS", "1".into()),
            ("DEFAULT_CLOUDFRONT_ORIGIN", DEFAULT_ORIGIN.into()),
        ]
    }

    /// The distribution made for an instance (its caller reference): id,
    /// domain name and configuration.
    pub async fn distribution(
        &self,
        instance_id: &str,
    ) -> Option<(String, String, DistributionConfig)> {
        self.distributions(instance_id).await.into_iter().next()
    }

    /// Every distribution made for an instance (there should be one).
    pub async fn distributions(
        &self,
        instance_id: &str,
    ) -> Vec<(String, String, DistributionConfig)> {
        let mut found = Vec::new();
        let list = self
            .cloud
            .cloudfront
            .list_distributions()
            .send()
            .await
            .unwrap();
        for summary in list
            .distribution_list
            .and_then(|l| l.items)
            .unwrap_or_default()
        {
            let config = self
                .cloud
                .cloudfront
                .get_distribution_config()
                .id(&summary.id)
                .send()
                .await;
            // Another test may delete its own between the list and this.
            let Ok(config) = config else { continue };
            let config = config.distribution_config.unwrap();
            if config.caller_reference == instance_id {
                found.push((summary.id, summary.domain_name, config));
            }
        }
        found
    }

    /// The records in the zone named `<domain>.<DNS_ROOT_DOMAIN>`.
    pub async fn aliases_of(&self, domain: &str) -> Vec<(String, String)> {
        let name = alias_name(domain);
        let mut found: Vec<(String, String)> = self
            .alias_records()
            .await
            .into_iter()
            .filter(|(n, _, _)| *n == name)
            .map(|(_, t, target)| (t, target))
            .collect();
        found.sort();
        found
    }

    /// (name, ARN) of the IAM server certificates under `/<service>/<prefix>/`.
    pub async fn iam_certificates(&self, service: &str) -> Vec<(String, String)> {
        let path = format!("/{service}/{}/", self.prefix);
        let out = self
            .cloud
            .iam
            .list_server_certificates()
            .path_prefix(&path)
            .send()
            .await
            .unwrap();
        // moto lists every path whatever the prefix asked for.
        out.server_certificate_metadata_list
            .into_iter()
            .filter(|m| m.path == path)
            .map(|m| (m.server_certificate_name, m.arn))
            .collect()
    }

    /// The ARNs of the ACM certificates for a domain (ACM is not ours
    /// alone: other tests import too).
    pub async fn acm_certificates(&self, domain: &str) -> Vec<String> {
        let out = self.cloud.acm.list_certificates().send().await.unwrap();
        out.certificate_summary_list
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.domain_name.as_deref() == Some(domain))
            .filter_map(|c| c.certificate_arn)
            .collect()
    }

    /// The certificate ARNs on a listener, its default left out.
    pub async fn listener_certificates(&self, listener: &str) -> Vec<String> {
        let out = self
            .cloud
            .elb
            .describe_listener_certificates()
            .listener_arn(listener)
            .send()
            .await
            .unwrap();
        out.certificates
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.is_default != Some(true))
            .filter_map(|c| c.certificate_arn)
            .filter(|arn| !arn.contains("/default-"))
            .collect()
    }

    /// Every record set of the zone.
    async fn record_sets(&self) -> Vec<ResourceRecordSet> {
        self.cloud
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .send()
            .await
            .unwrap()
            .resource_record_sets
    }

    /// The values of the TXT records at `name`, unquoted.
    pub async fn txt_values(&self, name: &str) -> Vec<String> {
        self.record_sets()
            .await
            .into_iter()
            .filter(|s| s.r#type == RrType::Txt && s.name.trim_end_matches('.') == name)
            .flat_map(|s| s.resource_records.unwrap_or_default())
            .map(|r| r.value.trim_matches('"').to_string())
            .collect()
    }

    /// The A and AAAA alias records in the zone: (name, type, target).
    pub async fn alias_records(&self) -> Vec<(String, String, String)> {
        self.record_sets()
            .await
            .into_iter()
            .filter(|s| matches!(s.r#type, RrType::A | RrType::Aaaa))
            .map(|s| {
                (
                    s.name.trim_end_matches('.').to_string(),
                    s.r#type.as_str().to_string(),
                    s.alias_target
                        .map(|a| a.dns_name.trim_end_matches('.').to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// `<domain>.<DNS_ROOT_DOMAIN>`, where the user's CNAME for traffic points.
pub fn alias_name(domain: &str) -> String {
    format!("{domain}.{}", env("DNS_ROOT_DOMAIN"))
}
