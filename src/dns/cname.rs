//! Before a provision or a domain change: is `_acme-challenge.<domain>`
//! delegated to the broker's zone? Follows CNAME chains and detects loops.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::DnsConfig;
use crate::domain::{DomainList, DomainName};

const MAX_CHAIN: usize = 8;

pub struct CnameChecker {
    resolver: TokioResolver,
    root: DomainName,
}

enum Cname {
    Missing,
    Target(String),
}

/// What was found at one challenge name.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    Ok,
    Missing,
    Wrong(String),
    Loop(Vec<String>),
    Unresolvable(String),
}

impl CnameChecker {
    pub fn new(config: &DnsConfig) -> CnameChecker {
        CnameChecker {
            resolver: resolver(config.verification_server),
            root: config.root_domain.clone(),
        }
    }

    async fn cname(&self, name: &str) -> Result<Cname, NetError> {
        match self
            .resolver
            .lookup(format!("{name}."), RecordType::CNAME)
            .await
        {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .find_map(|r| match &r.data {
                    RData::CNAME(c) => Some(Cname::Target(
                        c.0.to_utf8().trim_end_matches('.').to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .unwrap_or(Cname::Missing)),
            Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords { .. }))) => Ok(Cname::Missing),
            Err(e) => Err(e),
        }
    }

    /// Follows the chain from `_acme-challenge.<domain>` to the broker's name.
    pub async fn find(&self, domain: &DomainName) -> Finding {
        let expected = domain.delegated_challenge_name(&self.root);
        let mut chain = vec![domain.challenge_name()];
        loop {
            let current = chain.last().expect("never empty").clone();
            match self.cname(&current).await {
                Err(e) => return Finding::Unresolvable(e.to_string()),
                Ok(Cname::Missing) if chain.len() == 1 => return Finding::Missing,
                Ok(Cname::Missing) => return Finding::Wrong(chain[1].clone()),
                Ok(Cname::Target(target)) if target == expected => return Finding::Ok,
                Ok(Cname::Target(target)) => {
                    if chain.contains(&target) || chain.len() > MAX_CHAIN {
                        chain.push(target);
                        return Finding::Loop(chain);
                    }
                    chain.push(target);
                }
            }
        }
    }

    /// `Err` holds a message that tells the user, per domain, which record
    /// to create and what was found instead.
    pub async fn check(&self, domains: &DomainList) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for domain in domains.iter() {
            let name = domain.challenge_name();
            if seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            let expected = domain.delegated_challenge_name(&self.root);
            let lead = format!("CNAME {name} should point to {expected}, but");
            match self.find(domain).await {
                Finding::Ok => {}
                Finding::Missing => problems.push(format!("{lead} it does not exist.")),
                Finding::Wrong(found) => {
                    problems.push(format!("{lead} it is set incorrectly to {found}."))
                }
                Finding::Loop(chain) => problems.push(format!(
                    "{lead} it is part of a CNAME loop: {}.",
                    chain.join(" -> ")
                )),
                Finding::Unresolvable(e) => problems.push(format!(
                    "{lead} it could not be looked up ({e}); try again in a few minutes."
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "Before the broker can issue a certificate, each domain needs a DNS record that \
                 delegates its ACME challenge to the broker. {}",
                problems.join(" ")
            ))
        }
    }
}

fn resolver(server: SocketAddr) -> TokioResolver {
    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
    udp.port = server.port();
    tcp.port = server.port();
    let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        TokioRuntimeProvider::default(),
    );
    // Always ask: a user who just fixed a record must not meet a cached miss.
    let options = builder.options_mut();
    options.cache_size = 0;
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    options.use_hosts_file = ResolveHosts::Never;
    options.recursion_desired = true;
    options.timeout = Duration::from_secs(3);
    builder
        .build()
        .expect("a resolver with one name server builds")
}
