//! The `domain-with-cdn` plan's CloudFront distribution: made with the
//! original broker's settings, the instance id as caller reference (so a
//! retry finds the one an earlier attempt made), SNI only, TLS 1.2 (2021
//! ciphers), IPv6, and plain HTTP redirected to HTTPS.

use aws_sdk_cloudfront::types::{
    Aliases, AllowedMethods, CachedMethods, CookieNames, CookiePreference, CustomErrorResponse,
    CustomErrorResponses, CustomOriginConfig, DefaultCacheBehavior, DistributionConfig,
    ForwardedValues, Headers, ItemSelection, LoggingConfig, Method, MinimumProtocolVersion, Origin,
    OriginProtocolPolicy, OriginSslProtocols, Origins, PriceClass, QueryStringCacheKeys,
    SslProtocol, SslSupportMethod, ViewerCertificate, ViewerProtocolPolicy,
};

use super::certificates::StoredCertificate;
use super::{Cloud, CloudError, built};
use crate::domain::cdn::{CdnSettings, Cookies};

const ORIGIN_ID: &str = "default-origin";
const NOT_FOUND: &[&str] = &["NoSuchDistribution"];

/// What the broker keeps of a distribution.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DistributionInfo {
    pub id: String,
    pub domain_name: String,
}

/// What a distribution should be: its domains, its settings, and the
/// certificate it serves.
pub struct DistributionSpec<'a> {
    /// The instance id: CloudFront refuses a second distribution with it.
    pub caller_reference: &'a str,
    pub aliases: &'a [&'a str],
    pub settings: &'a CdnSettings,
    pub certificate: &'a StoredCertificate,
}

/// Where a distribution stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributionState {
    pub deployed: bool,
    pub enabled: bool,
}

impl Cloud {
    /// Creates the distribution, or finds the one an earlier attempt made.
    pub async fn create_distribution(
        &self,
        spec: &DistributionSpec<'_>,
    ) -> Result<DistributionInfo, CloudError> {
        const OP: &str = "cloudfront:CreateDistribution";
        let config = self.distribution_config(spec, true)?;
        match self
            .cloudfront
            .create_distribution()
            .distribution_config(config)
            .send()
            .await
        {
            Ok(out) => {
                let d = out
                    .distribution
                    .ok_or_else(|| CloudError::unexpected(OP, "no distribution"))?;
                Ok(DistributionInfo {
                    id: d.id,
                    domain_name: d.domain_name,
                })
            }
            Err(e) => {
                let e = CloudError::sdk(OP, e);
                if !e.is(&["DistributionAlreadyExists"]) {
                    return Err(e);
                }
                // CloudFront names the one an earlier attempt made.
                let named = match &e {
                    CloudError::Service { message, .. } => message
                        .rsplit_once("Already exists: ")
                        .map(|(_, id)| id.trim().trim_end_matches('.').to_string()),
                    _ => None,
                };
                let found = match named {
                    Some(id) => {
                        self.distribution_made_for(&id, spec.caller_reference)
                            .await?
                    }
                    None => None,
                };
                let found = match found {
                    Some(found) => found,
                    None => self
                        .find_distribution(spec.caller_reference)
                        .await?
                        .ok_or(e)?,
                };
                // Made with this spec before a crash, most likely; made
                // what the spec says in any case.
                self.update_distribution(&found.id, spec).await?;
                Ok(found)
            }
        }
    }

    /// The distribution with this id, if it was made with this caller
    /// reference.
    async fn distribution_made_for(
        &self,
        id: &str,
        caller_reference: &str,
    ) -> Result<Option<DistributionInfo>, CloudError> {
        match self.cloudfront.get_distribution().id(id).send().await {
            Ok(out) => Ok(out
                .distribution
                .filter(|d| {
                    d.distribution_config
                        .as_ref()
                        .is_some_and(|c| c.caller_reference == caller_reference)
                })
                .map(|d| DistributionInfo {
                    id: d.id,
                    domain_name: d.domain_name,
                })),
            Err(e) => match CloudError::sdk("cloudfront:GetDistribution", e) {
                e if e.is(NOT_FOUND) => Ok(None),
                e => Err(e),
            },
        }
    }

    /// The distribution made with this caller reference, if any: among
    /// those whose comment names it, so that only they are read.
    pub async fn find_distribution(
        &self,
        caller_reference: &str,
    ) -> Result<Option<DistributionInfo>, CloudError> {
        let comment = comment_for(caller_reference);
        let mut pages = self.cloudfront.list_distributions().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CloudError::sdk("cloudfront:ListDistributions", e))?;
            let items = page
                .distribution_list
                .and_then(|l| l.items)
                .unwrap_or_default();
            for summary in items.iter().filter(|s| s.comment == comment) {
                if let Some(found) = self
                    .distribution_made_for(&summary.id, caller_reference)
                    .await?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// None when the distribution no longer exists.
    pub async fn distribution_state(
        &self,
        id: &str,
    ) -> Result<Option<DistributionState>, CloudError> {
        match self.cloudfront.get_distribution().id(id).send().await {
            Ok(out) => Ok(out.distribution.map(|d| DistributionState {
                deployed: d.status == "Deployed",
                enabled: d.distribution_config.is_some_and(|c| c.enabled),
            })),
            Err(e) => match CloudError::sdk("cloudfront:GetDistribution", e) {
                e if e.is(NOT_FOUND) => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Makes the distribution what the spec says (domains, settings,
    /// certificate), keeping its caller reference.
    pub async fn update_distribution(
        &self,
        id: &str,
        spec: &DistributionSpec<'_>,
    ) -> Result<(), CloudError> {
        let (current, etag) = self.distribution_config_of(id).await?;
        let spec = DistributionSpec {
            caller_reference: &current.caller_reference,
            ..*spec
        };
        let config = self.distribution_config(&spec, true)?;
        self.put_distribution_config(id, config, &etag).await
    }

    /// Turns the distribution off, the first step of deleting it; one
    /// already gone is fine.
    pub async fn disable_distribution(&self, id: &str) -> Result<(), CloudError> {
        let (mut config, etag) = match self.distribution_config_of(id).await {
            Err(e) if e.is(NOT_FOUND) => return Ok(()),
            other => other?,
        };
        if !config.enabled {
            return Ok(());
        }
        config.enabled = false;
        match self.put_distribution_config(id, config, &etag).await {
            Err(e) if e.is(NOT_FOUND) => Ok(()),
            other => other,
        }
    }

    /// Deletes a disabled, deployed distribution; one already gone is fine.
    pub async fn delete_distribution(&self, id: &str) -> Result<(), CloudError> {
        const OP: &str = "cloudfront:DeleteDistribution";
        let etag = match self.cloudfront.get_distribution().id(id).send().await {
            Ok(out) => out.e_tag.unwrap_or_default(),
            Err(e) => match CloudError::sdk("cloudfront:GetDistribution", e) {
                e if e.is(NOT_FOUND) => return Ok(()),
                e => return Err(e),
            },
        };
        match self
            .cloudfront
            .delete_distribution()
            .id(id)
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match CloudError::sdk(OP, e) {
                e if e.is(NOT_FOUND) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn distribution_config_of(
        &self,
        id: &str,
    ) -> Result<(DistributionConfig, String), CloudError> {
        const OP: &str = "cloudfront:GetDistributionConfig";
        let out = self
            .cloudfront
            .get_distribution_config()
            .id(id)
            .send()
            .await
            .map_err(|e| CloudError::sdk(OP, e))?;
        let config = out
            .distribution_config
            .ok_or_else(|| CloudError::unexpected(OP, "no configuration"))?;
        Ok((config, out.e_tag.unwrap_or_default()))
    }

    async fn put_distribution_config(
        &self,
        id: &str,
        config: DistributionConfig,
        etag: &str,
    ) -> Result<(), CloudError> {
        self.cloudfront
            .update_distribution()
            .id(id)
            .if_match(etag)
            .distribution_config(config)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| CloudError::sdk("cloudfront:UpdateDistribution", e))
    }

    fn distribution_config(
        &self,
        spec: &DistributionSpec<'_>,
        enabled: bool,
    ) -> Result<DistributionConfig, CloudError> {
        const OP: &str = "cloudfront:DistributionConfig";
        let s = spec.settings;
        let aliases: Vec<String> = spec.aliases.iter().map(|a| a.to_string()).collect();
        let origin = Origin::builder()
            .id(ORIGIN_ID)
            .domain_name(&s.origin)
            .origin_path(&s.path)
            .custom_origin_config(built(
                OP,
                CustomOriginConfig::builder()
                    .http_port(80)
                    .https_port(443)
                    .origin_protocol_policy(if s.insecure_origin {
                        OriginProtocolPolicy::HttpOnly
                    } else {
                        OriginProtocolPolicy::HttpsOnly
                    })
                    .origin_ssl_protocols(built(
                        OP,
                        OriginSslProtocols::builder()
                            .quantity(1)
                            .items(SslProtocol::TlSv12)
                            .build(),
                    )?)
                    .origin_read_timeout(30)
                    .origin_keepalive_timeout(5)
                    .build(),
            )?)
            .build();
        let all_methods = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Options,
            Method::Delete,
        ];
        let behavior = DefaultCacheBehavior::builder()
            .target_origin_id(ORIGIN_ID)
            .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
            .allowed_methods(built(
                OP,
                AllowedMethods::builder()
                    .quantity(all_methods.len() as i32)
                    .set_items(Some(all_methods.to_vec()))
                    .cached_methods(built(
                        OP,
                        CachedMethods::builder()
                            .quantity(2)
                            .items(Method::Get)
                            .items(Method::Head)
                            .build(),
                    )?)
                    .build(),
            )?)
            .set_origin_request_policy_id(s.origin_request_policy_id.map(str::to_string));
        // Without a cache policy, the legacy forwarded values and TTLs, as
        // the original broker sets them (AWS deprecates them, but still
        // takes them, and moto knows nothing else).
        #[allow(deprecated)]
        let behavior = match s.cache_policy_id {
            Some(policy) => behavior.cache_policy_id(policy),
            None => behavior
                .forwarded_values(forwarded_values(s)?)
                .min_ttl(0)
                .default_ttl(86_400)
                .max_ttl(31_536_000),
        };
        let errors = s
            .error_responses
            .iter()
            .map(|(code, page)| {
                built(
                    OP,
                    CustomErrorResponse::builder()
                        .error_code(code.parse().unwrap_or_default())
                        .response_page_path(page)
                        .response_code(code)
                        .error_caching_min_ttl(300)
                        .build(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let logging = match &self.config.cdn_log_bucket {
            Some(bucket) => LoggingConfig::builder()
                .enabled(true)
                .include_cookies(false)
                .bucket(bucket)
                .prefix(format!("{}/", spec.caller_reference)),
            None => LoggingConfig::builder()
                .enabled(false)
                .include_cookies(false)
                .bucket("")
                .prefix(""),
        };
        let certificate = ViewerCertificate::builder()
            .cloud_front_default_certificate(false)
            .ssl_support_method(SslSupportMethod::SniOnly)
            .minimum_protocol_version(MinimumProtocolVersion::TlSv122021);
        let certificate = match &spec.certificate.iam_id {
            Some(id) => certificate.iam_certificate_id(id),
            None => certificate.acm_certificate_arn(&spec.certificate.arn),
        };
        built(
            OP,
            DistributionConfig::builder()
                .caller_reference(spec.caller_reference)
                .aliases(built(
                    OP,
                    Aliases::builder()
                        .quantity(aliases.len() as i32)
                        .set_items(Some(aliases))
                        .build(),
                )?)
                .default_root_object("")
                .origins(built(
                    OP,
                    Origins::builder()
                        .quantity(1)
                        .items(built(OP, origin)?)
                        .build(),
                )?)
                .default_cache_behavior(built(OP, behavior.build())?)
                .custom_error_responses(built(
                    OP,
                    CustomErrorResponses::builder()
                        .quantity(errors.len() as i32)
                        .set_items((!errors.is_empty()).then_some(errors))
                        .build(),
                )?)
                .comment(comment_for(spec.caller_reference))
                .logging(logging.build())
                .price_class(PriceClass::PriceClass100)
                .enabled(enabled)
                .viewer_certificate(certificate.build())
                .is_ipv6_enabled(true)
                .build(),
        )
    }
}

/// The distribution's comment names its instance, so that it can be found
/// from a listing (CloudFront allows 128 characters).
fn comment_for(instance_id: &str) -> String {
    format!("domain-broker instance {instance_id}")
        .chars()
        .take(128)
        .collect()
}

#[allow(deprecated)]
fn forwarded_values(s: &CdnSettings) -> Result<ForwardedValues, CloudError> {
    const OP: &str = "cloudfront:ForwardedValues";
    let cookies = match &s.cookies {
        Cookies::All => CookiePreference::builder().forward(ItemSelection::All),
        Cookies::None => CookiePreference::builder().forward(ItemSelection::None),
        Cookies::Only(names) => CookiePreference::builder()
            .forward(ItemSelection::Whitelist)
            .whitelisted_names(built(
                OP,
                CookieNames::builder()
                    .quantity(names.len() as i32)
                    .set_items(Some(names.clone()))
                    .build(),
            )?),
    };
    built(
        OP,
        ForwardedValues::builder()
            .query_string(true)
            .cookies(built(OP, cookies.build())?)
            .headers(built(
                OP,
                Headers::builder()
                    .quantity(s.headers.len() as i32)
                    .set_items((!s.headers.is_empty()).then(|| s.headers.clone()))
                    .build(),
            )?)
            .query_string_cache_keys(built(
                OP,
                QueryStringCacheKeys::builder().quantity(0).build(),
            )?)
            .build(),
    )
}
