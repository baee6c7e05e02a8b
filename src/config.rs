//! Every setting, from the environment, in one typed place. A missing or
//! malformed setting stops start-up with a message that names it.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

use crate::domain::DomainName;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration: {name} {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    pub const DEFAULT: &'static str = "sqlite://data/broker.sqlite";

    pub fn parse(url: &str) -> Option<DatabaseUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(DatabaseUrl::Postgres(url.to_string()))
        } else {
            url.strip_prefix("sqlite://")
                .filter(|p| !p.is_empty())
                .map(|p| DatabaseUrl::Sqlite(PathBuf::from(p)))
        }
    }

    /// For logs: a PostgreSQL password is replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = self.to_string();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
                let colon = scheme + 3 + url[scheme + 3..at].find(':').expect("checked");
                format!("{}:***{}", &url[..colon], &url[at..])
            }
            _ => url,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite(_))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(url) => f.write_str(url),
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsProvider {
    Rfc2136 {
        server: SocketAddr,
        key_name: String,
        secret: Vec<u8>,
        algorithm: TsigAlgorithm,
    },
    /// TXT records in the Route53 zone ROUTE53_ZONE_ID.
    Route53,
}

#[derive(Clone, Debug)]
pub struct AcmeConfig {
    pub directory_url: String,
    pub root_cert: Option<PathBuf>,
    pub contact_email: Option<String>,
    pub poll_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct DnsConfig {
    pub root_domain: DomainName,
    pub verification_server: SocketAddr,
    pub propagation_sleep: Duration,
    pub provider: DnsProvider,
}

/// When certificates are renewed, and how many orders may run at once.
#[derive(Clone, Debug)]
pub struct RenewalConfig {
    pub renew_before_days: u32,
    pub max_concurrent_orders: usize,
    pub check_interval: Duration,
    /// Renewals found due together start spread over this long.
    pub jitter: Duration,
}

/// How this broker takes turns with other replicas on one PostgreSQL.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Stable across restarts (the host name by default), so a restarted
    /// replica takes its own leases back at once.
    pub id: String,
    /// A replica that stops renewing its leases loses them after this long.
    pub lease: Duration,
}

/// Where certificates for the AWS plans are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateStore {
    Iam,
    Acm,
}

/// The AWS plans' settings. All optional: the broker starts without them,
/// and a plan whose settings are missing is refused at provision.
#[derive(Clone, Debug, Default)]
pub struct AwsConfig {
    /// Overrides the SDK's endpoint (AWS_ENDPOINT_URL; moto in tests).
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// The bare id of the hosted zone of DNS_ROOT_DOMAIN.
    pub route53_zone_id: Option<String>,
    pub alb_listener_arns: Vec<String>,
    pub default_cloudfront_origin: Option<DomainName>,
    pub certificate_store: Option<CertificateStore>,
    pub cdn_log_bucket: Option<String>,
    /// IAM paths are `/cloudfront/<prefix>/` and `/alb/<prefix>/`.
    pub iam_certificate_prefix: String,
    /// How long an old certificate stays on its listener after the ALIAS
    /// records moved to the new one.
    pub alb_overlap: Duration,
    /// How often a CloudFront distribution's state is looked at.
    pub poll_interval: Duration,
}

impl AwsConfig {
    /// The settings a plan needs that are not set; empty when it can run.
    pub fn missing_for(&self, plan: crate::domain::Plan) -> Vec<&'static str> {
        use crate::domain::Plan;
        let mut missing = Vec::new();
        if plan == Plan::Certificate {
            return missing;
        }
        if self.route53_zone_id.is_none() {
            missing.push("ROUTE53_ZONE_ID");
        }
        match plan {
            Plan::Domain if self.alb_listener_arns.is_empty() => missing.push("ALB_LISTENER_ARNS"),
            Plan::DomainWithCdn if self.default_cloudfront_origin.is_none() => {
                missing.push("DEFAULT_CLOUDFRONT_ORIGIN")
            }
            _ => {}
        }
        missing
    }

    /// Whether an AWS plan can run, so that AWS clients are needed (as
    /// they also are for DNS_PROVIDER=route53).
    pub fn plans_in_use(&self) -> bool {
        use crate::domain::Plan;
        [Plan::Domain, Plan::DomainWithCdn]
            .into_iter()
            .any(|p| self.missing_for(p).is_empty())
    }

    pub fn certificate_store(&self) -> CertificateStore {
        self.certificate_store.unwrap_or(CertificateStore::Iam)
    }
}

#[derive(Clone)]
pub struct Config {
    pub addr: String,
    pub username: String,
    pub password: String,
    pub database_url: DatabaseUrl,
    pub encryption_key: [u8; 32],
    pub acme: AcmeConfig,
    pub dns: DnsConfig,
    pub renewal: RenewalConfig,
    pub replica: ReplicaConfig,
    pub aws: AwsConfig,
}

impl fmt::Debug for Config {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database_url", &self.database_url.redacted())
            .field("acme", &self.acme)
            .field("dns_root_domain", &self.dns.root_domain)
            .field("renewal", &self.renewal)
            .field("replica", &self.replica)
            .field("aws", &self.aws)
            .finish_non_exhaustive()
    }
}

/// Reads settings through a lookup function, so tests need no process env.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl Env<fn(&str) -> Option<String>> {
    pub fn process() -> Self {
        Env(|name| std::env::var(name).ok())
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str, what: &str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError {
            name,
            problem: format!("is not set: {what}"),
        })
    }

    fn parsed<T>(
        &self,
        name: &'static str,
        default: Option<&str>,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let raw = match (self.get(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(self.required(name, what).unwrap_err()),
        };
        parse(raw.trim()).ok_or_else(|| ConfigError {
            name,
            problem: format!("is malformed ({}): expected {what}", shown(name, &raw)),
        })
    }

    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        self.parsed(
            "DATABASE_URL",
            Some(DatabaseUrl::DEFAULT),
            "postgres://... or sqlite://PATH",
            DatabaseUrl::parse,
        )
    }

    pub fn config(&self) -> Result<Config, ConfigError> {
        let host_port = |s: &str| s.to_socket_addrs().ok()?.next();
        let seconds = |s: &str| s.parse::<u64>().ok().map(Duration::from_secs);
        let addr = self.parsed("BROKER_ADDR", Some("127.0.0.1:8080"), "host:port", |s| {
            host_port(s).map(|_| s.to_string())
        })?;
        let encryption_key = self.parsed(
            "DATABASE_ENCRYPTION_KEY",
            None,
            "32 bytes in standard base64 (e.g. `openssl rand -base64 32`)",
            |s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .ok()?
                    .try_into()
                    .ok()
            },
        )?;
        let acme = AcmeConfig {
            directory_url: self.parsed(
                "ACME_DIRECTORY_URL",
                Some("https://acme-v02.api.letsencrypt.org/directory"),
                "an https:// URL",
                |s| s.starts_with("https://").then(|| s.to_string()),
            )?,
            root_cert: match self.get("ACME_ROOT_CERT") {
                None => None,
                Some(path) => Some(self.parsed(
                    "ACME_ROOT_CERT",
                    None,
                    "the path of a readable PEM file",
                    |_| {
                        let p = PathBuf::from(path.trim());
                        std::fs::read_to_string(&p)
                            .ok()
                            .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
                            .map(|_| p)
                    },
                )?),
            },
            contact_email: self.get("ACME_CONTACT_EMAIL"),
            poll_timeout: self.parsed(
                "ACME_POLL_TIMEOUT_IN_SECONDS",
                Some("90"),
                "a number of seconds",
                seconds,
            )?,
        };
        let dns = DnsConfig {
            root_domain: self.parsed(
                "DNS_ROOT_DOMAIN",
                None,
                "the zone the broker writes challenge records into, e.g. domains.example.gov",
                |s| DomainName::parse(s).ok().filter(|d| !d.is_wildcard()),
            )?,
            verification_server: self.parsed(
                "DNS_VERIFICATION_SERVER",
                None,
                "host:port of the resolver that checks users' CNAME records",
                host_port,
            )?,
            propagation_sleep: self.parsed(
                "DNS_PROPAGATION_SLEEP_TIME",
                Some("300"),
                "a number of seconds",
                seconds,
            )?,
            provider: self.dns_provider(&host_port)?,
        };
        let renewal = RenewalConfig {
            renew_before_days: self.parsed(
                "RENEW_BEFORE_DAYS",
                Some("30"),
                "a number of days",
                |s| s.parse().ok(),
            )?,
            max_concurrent_orders: self.parsed(
                "MAX_CONCURRENT_ORDERS",
                Some("10"),
                "a positive number",
                |s| s.parse().ok().filter(|n| *n > 0),
            )?,
            check_interval: self.parsed(
                "RENEWAL_CHECK_INTERVAL_SECONDS",
                Some("3600"),
                "a positive number of seconds",
                |s| seconds(s).filter(|d| !d.is_zero()),
            )?,
            jitter: self.parsed(
                "RENEWAL_JITTER_SECONDS",
                Some("600"),
                "a number of seconds",
                seconds,
            )?,
        };
        let replica = ReplicaConfig {
            id: self.get("REPLICA_ID").unwrap_or_else(host_name),
            lease: self.parsed(
                "LEASE_SECONDS",
                Some("30"),
                "a number of seconds, at least 3",
                |s| seconds(s).filter(|d| d.as_secs() >= 3),
            )?,
        };
        let aws = self.aws()?;
        Ok(Config {
            aws,
            addr,
            username: self.required(
                "BROKER_USERNAME",
                "the user name platforms authenticate with",
            )?,
            password: self.required(
                "BROKER_PASSWORD",
                "the password platforms authenticate with",
            )?,
            database_url: self.database_url()?,
            encryption_key,
            acme,
            dns,
            renewal,
            replica,
        })
    }

    fn aws(&self) -> Result<AwsConfig, ConfigError> {
        let seconds = |s: &str| s.parse::<u64>().ok().map(Duration::from_secs);
        let optional = |name: &'static str, what: &str, parse: &dyn Fn(&str) -> Option<String>| {
            self.get(name)
                .map(|_| self.parsed(name, None, what, parse))
                .transpose()
        };
        Ok(AwsConfig {
            endpoint_url: optional("AWS_ENDPOINT_URL", "an http:// or https:// URL", &|s| {
                (s.starts_with("http://") || s.starts_with("https://")).then(|| s.to_string())
            })?,
            region: self.get("AWS_REGION"),
            route53_zone_id: optional(
                "ROUTE53_ZONE_ID",
                "the id of the hosted zone of DNS_ROOT_DOMAIN, e.g. Z0123ABC",
                &|s| {
                    let id = s.strip_prefix("/hostedzone/").unwrap_or(s);
                    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
                        .then(|| id.to_string())
                },
            )?,
            alb_listener_arns: match self.get("ALB_LISTENER_ARNS") {
                None => Vec::new(),
                Some(_) => self.parsed(
                    "ALB_LISTENER_ARNS",
                    None,
                    "comma-separated listener ARNs (arn:aws:elasticloadbalancing:...)",
                    |s| {
                        let mut arns: Vec<String> = Vec::new();
                        for arn in s.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                            if !arn.starts_with("arn:") || !arn.contains(":listener/") {
                                return None;
                            }
                            if !arns.iter().any(|a| a == arn) {
                                arns.push(arn.to_string());
                            }
                        }
                        (!arns.is_empty()).then_some(arns)
                    },
                )?,
            },
            default_cloudfront_origin: match self.get("DEFAULT_CLOUDFRONT_ORIGIN") {
                None => None,
                Some(_) => Some(self.parsed(
                    "DEFAULT_CLOUDFRONT_ORIGIN",
                    None,
                    "the host name of the platform's router, e.g. apps.example.gov",
                    |s| DomainName::parse(s).ok().filter(|d| !d.is_wildcard()),
                )?),
            },
            certificate_store: match self.get("CERTIFICATE_STORE") {
                None => None,
                Some(_) => {
                    Some(
                        self.parsed("CERTIFICATE_STORE", None, "iam or acm", |s| match s {
                            "iam" => Some(CertificateStore::Iam),
                            "acm" => Some(CertificateStore::Acm),
                            _ => None,
                        })?,
                    )
                }
            },
            cdn_log_bucket: self.get("CDN_LOG_BUCKET"),
            iam_certificate_prefix: self.parsed(
                "IAM_CERTIFICATE_PREFIX",
                Some("external-domains"),
                "letters, digits, '-', '_' and '/' (e.g. external-domains-production)",
                |s| {
                    let p = s.trim_matches('/');
                    (!p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c)))
                    .then(|| p.to_string())
                },
            )?,
            alb_overlap: self.parsed(
                "ALB_OVERLAP_SLEEP_TIME",
                Some("900"),
                "a number of seconds",
                seconds,
            )?,
            poll_interval: self.parsed(
                "AWS_POLL_WAIT_TIME_IN_SECONDS",
                Some("60"),
                "a positive number of seconds",
                |s| seconds(s).filter(|d| !d.is_zero()),
            )?,
        })
    }

    fn dns_provider(
        &self,
        host_port: &dyn Fn(&str) -> Option<SocketAddr>,
    ) -> Result<DnsProvider, ConfigError> {
        let route53 =
            self.parsed(
                "DNS_PROVIDER",
                Some("rfc2136"),
                "rfc2136 or route53",
                |s| match s {
                    "rfc2136" => Some(false),
                    "route53" => Some(true),
                    _ => None,
                },
            )?;
        if route53 {
            self.required(
                "ROUTE53_ZONE_ID",
                "DNS_PROVIDER=route53 writes challenge records into this hosted zone",
            )?;
            return Ok(DnsProvider::Route53);
        }
        Ok(DnsProvider::Rfc2136 {
            server: self.parsed(
                "RFC2136_SERVER",
                None,
                "host:port of the primary server of DNS_ROOT_DOMAIN",
                host_port,
            )?,
            key_name: self.required("RFC2136_TSIG_KEY_NAME", "the TSIG key name for updates")?,
            secret: self.parsed("RFC2136_TSIG_SECRET", None, "a base64 TSIG secret", |s| {
                base64::engine::general_purpose::STANDARD.decode(s).ok()
            })?,
            algorithm: self.parsed(
                "RFC2136_TSIG_ALGORITHM",
                Some("hmac-sha256"),
                "hmac-sha256, hmac-sha384 or hmac-sha512",
                |s| match s {
                    "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
                    "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
                    "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
                    _ => None,
                },
            )?,
        })
    }
}

/// Settings whose values must never reach a log, even when malformed.
const SECRETS: &[&str] = &[
    "DATABASE_ENCRYPTION_KEY",
    "RFC2136_TSIG_SECRET",
    "BROKER_PASSWORD",
];

/// A malformed value as an error message may show it: secrets by length
/// only, URLs without what follows the scheme (it may hold a password).
fn shown(name: &str, raw: &str) -> String {
    if SECRETS.contains(&name) {
        format!("a value of {} characters, not shown", raw.chars().count())
    } else if let Some((scheme, _)) = raw.split_once("://") {
        format!("{scheme}://..., rest not shown")
    } else {
        format!("{raw:?}")
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "domain-broker".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env(move |name: &str| map.get(name).cloned())
    }

    const GOOD: &[(&str, &str)] = &[
        ("BROKER_USERNAME", "u"),
        ("BROKER_PASSWORD", "p"),
        (
            "DATABASE_ENCRYPTION_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        ("DNS_ROOT_DOMAIN", "broker.test"),
        ("DNS_VERIFICATION_SERVER", "127.0.0.1:8053"),
        ("RFC2136_SERVER", "127.0.0.1:8053"),
        ("RFC2136_TSIG_KEY_NAME", "broker-key"),
        ("RFC2136_TSIG_SECRET", "c2VjcmV0"),
    ];

    #[test]
    fn defaults_apply() {
        let config = env(GOOD).config().unwrap();
        assert_eq!(config.addr, "127.0.0.1:8080");
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite("data/broker.sqlite".into())
        );
        assert_eq!(config.dns.propagation_sleep, Duration::from_secs(300));
    }

    #[test]
    fn each_missing_or_malformed_setting_is_named() {
        for (name, _) in GOOD {
            let without: Vec<_> = GOOD.iter().filter(|(n, _)| n != name).copied().collect();
            let err = env(&without).config().unwrap_err();
            assert_eq!(err.name, *name, "{err}");
        }
        for (name, bad) in [
            ("DATABASE_URL", "mysql://user:hunter2@db/x"),
            ("DATABASE_ENCRYPTION_KEY", "c2hvcnQ="),
            ("DNS_PROPAGATION_SLEEP_TIME", "soon"),
            ("BROKER_ADDR", "nope"),
            ("RFC2136_TSIG_ALGORITHM", "md5"),
            ("DNS_PROVIDER", "carrier-pigeon"),
            ("ACME_ROOT_CERT", "/does/not/exist.pem"),
            ("DNS_ROOT_DOMAIN", "not a domain"),
            ("MAX_CONCURRENT_ORDERS", "0"),
            ("RENEWAL_CHECK_INTERVAL_SECONDS", "0"),
            ("RENEW_BEFORE_DAYS", "-1"),
            ("LEASE_SECONDS", "1"),
        ] {
            let mut pairs = GOOD.to_vec();
            pairs.push((name, bad));
            let err = env(&pairs).config().unwrap_err();
            assert_eq!(err.name, name, "{err}");
            assert!(err.to_string().contains("malformed"), "{err}");
            if SECRETS.contains(&name) {
                assert!(!err.to_string().contains(bad), "{err} shows the secret");
            }
        }
    }

    #[test]
    fn malformed_urls_keep_their_passwords() {
        let pairs = [GOOD, &[("DATABASE_URL", "mysql://user:hunter2@db/x")]].concat();
        let err = env(&pairs).config().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///abs/file.db"),
            Some(DatabaseUrl::Sqlite("/abs/file.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://rel/file.db"),
            Some(DatabaseUrl::Sqlite("rel/file.db".into()))
        );
        assert!(DatabaseUrl::parse("postgres://u@h/db").is_some());
        assert_eq!(DatabaseUrl::parse("sqlite://"), None);
        let pg = DatabaseUrl::parse("postgres://user:secret@db:5432/broker").unwrap();
        assert_eq!(pg.redacted(), "postgres://user:***@db:5432/broker");
        assert_eq!(
            DatabaseUrl::parse("postgres://u@h/db").unwrap().redacted(),
            "postgres://u@h/db"
        );
    }
}
