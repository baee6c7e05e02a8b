//! Challenge TXT records in the broker's zone: by RFC 2136 with TSIG, or
//! in a Route53 hosted zone.

use std::sync::Arc;

use dns_update::{DnsRecord, DnsRecordType, DnsUpdater, TsigAlgorithm};

use crate::cloud::Cloud;
use crate::config::{DnsConfig, DnsProvider, TsigAlgorithm as Algorithm};
use crate::domain::DomainName;

/// Challenge records live briefly; a short TTL keeps resolvers from holding
/// on to an old value.
const TXT_TTL: u32 = 60;

/// Updates in flight at once, each on a new TCP connection. A DNS server
/// applies a zone's updates one at a time, so more gain nothing; and BIND
/// queues 10 connections not yet accepted by default (`tcp-listen-queue`):
/// a burst beyond that has connections dropped, each retried by the kernel
/// a second later (measured: 100 updates at once with 32 in flight, the
/// last answered after 1.01 s; with 8, after 55 to 85 ms).
const MAX_UPDATES_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
#[error("DNS update of {name} failed: {message}")]
pub struct DnsError {
    pub name: String,
    pub message: String,
}

impl DnsError {
    fn at(name: &str, e: impl std::fmt::Display) -> DnsError {
        DnsError {
            name: name.to_string(),
            message: e.to_string(),
        }
    }
}

pub struct ChallengeRecords {
    provider: Provider,
    zone: DomainName,
    in_flight: tokio::sync::Semaphore,
}

enum Provider {
    Rfc2136(Box<DnsUpdater>),
    Route53(Arc<Cloud>),
}

impl ChallengeRecords {
    /// `cloud` is needed (and given) for DNS_PROVIDER=route53.
    pub fn new(
        config: &DnsConfig,
        cloud: Option<Arc<Cloud>>,
    ) -> Result<ChallengeRecords, DnsError> {
        let (server, key_name, secret, algorithm) = match &config.provider {
            DnsProvider::Rfc2136 {
                server,
                key_name,
                secret,
                algorithm,
            } => (server, key_name, secret, algorithm),
            DnsProvider::Route53 => {
                let cloud = cloud.ok_or_else(|| DnsError {
                    name: config.root_domain.to_string(),
                    message: "DNS_PROVIDER=route53 needs the AWS settings".into(),
                })?;
                return Ok(ChallengeRecords::with(
                    Provider::Route53(cloud),
                    config.root_domain.clone(),
                ));
            }
        };
        let algorithm = match algorithm {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        // TCP: an update and its answer are never lost to a dropped datagram.
        let updater = DnsUpdater::new_rfc2136_tsig(
            format!("tcp://{server}").as_str(),
            key_name,
            secret.clone(),
            algorithm,
        )
        .map_err(|e| DnsError {
            name: key_name.clone(),
            message: e.to_string(),
        })?;
        Ok(ChallengeRecords::with(
            Provider::Rfc2136(Box::new(updater)),
            config.root_domain.clone(),
        ))
    }

    fn with(provider: Provider, zone: DomainName) -> ChallengeRecords {
        ChallengeRecords {
            provider,
            zone,
            in_flight: tokio::sync::Semaphore::new(MAX_UPDATES_IN_FLIGHT),
        }
    }

    fn check_in_zone(&self, name: &str) -> Result<(), DnsError> {
        // dns-update panics on a name outside the zone; refuse it first.
        let zone = self.zone.as_str();
        let name = name.trim_end_matches('.');
        if name == zone || name.ends_with(&format!(".{zone}")) {
            Ok(())
        } else {
            Err(DnsError {
                name: name.to_string(),
                message: format!("it is outside the zone {zone}"),
            })
        }
    }

    /// Adds one value to the TXT set at `name`; other values stay, since an
    /// apex and its wildcard share one name.
    pub async fn add_txt(&self, name: &str, value: &str) -> Result<(), DnsError> {
        self.check_in_zone(name)?;
        let _turn = self.in_flight.acquire().await;
        match &self.provider {
            Provider::Rfc2136(updater) => updater
                .add_to_rrset(
                    name,
                    DnsRecordType::TXT,
                    TXT_TTL,
                    vec![DnsRecord::TXT(value.to_string())],
                    self.zone.as_str(),
                )
                .await
                .map_err(|e| DnsError::at(name, e)),
            Provider::Route53(cloud) => cloud
                .add_txt(name, value)
                .await
                .map_err(|e| DnsError::at(name, e)),
        }
    }

    /// Removes exactly this value; a value already gone is no error.
    pub async fn remove_txt(&self, name: &str, value: &str) -> Result<(), DnsError> {
        self.check_in_zone(name)?;
        let _turn = self.in_flight.acquire().await;
        match &self.provider {
            Provider::Rfc2136(updater) => updater
                .remove_from_rrset(
                    name,
                    DnsRecordType::TXT,
                    vec![DnsRecord::TXT(value.to_string())],
                    self.zone.as_str(),
                )
                .await
                .map_err(|e| DnsError::at(name, e)),
            Provider::Route53(cloud) => cloud
                .remove_txt(name, value)
                .await
                .map_err(|e| DnsError::at(name, e)),
        }
    }
}
