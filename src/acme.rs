//! The ACME client (instant-acme): one account per directory URL, shared by
//! every instance and stored encrypted; orders re-opened by URL so that a
//! restarted broker resumes where it stopped.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDateTime;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, Order, OrderStatus,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::Mutex;

use crate::actors::Store;
use crate::config::AcmeConfig;
use crate::crypto::Cipher;
use crate::db::models::{AcmeAccountRow, new_id, now};
use crate::db::{DbError, queries};
use crate::domain::{DomainList, DomainName};

const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
const ACCOUNT_UNKNOWN: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the ACME server refused: {0}")]
    Refused(String),
    #[error("the ACME server is rate limiting us: {0}")]
    RateLimited(String),
    #[error("the ACME server no longer knows our account; registering again: {0}")]
    AccountUnknown(String),
    #[error("cannot reach the ACME server: {0}")]
    Unreachable(String),
    #[error("the order is invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("ACME client set-up: {0}")]
    Setup(String),
}

impl AcmeError {
    /// Problems the CA reports about the request itself will not go away by
    /// trying again; network trouble and rate limits will.
    pub fn is_permanent(&self) -> bool {
        matches!(self, AcmeError::Refused(_) | AcmeError::Invalid(_))
    }
}

impl From<instant_acme::Error> for AcmeError {
    fn from(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(problem) => {
                let text = problem.to_string();
                match problem.r#type.as_deref() {
                    Some(RATE_LIMITED) => AcmeError::RateLimited(text),
                    Some(ACCOUNT_UNKNOWN) => AcmeError::AccountUnknown(text),
                    Some(t) if t.ends_with(":badNonce") || t.ends_with(":serverInternal") => {
                        AcmeError::Unreachable(text)
                    }
                    _ => AcmeError::Refused(text),
                }
            }
            other => AcmeError::Unreachable(other.to_string()),
        }
    }
}

/// One dns-01 challenge of a new order.
pub struct NewChallenge {
    /// The name validated: a wildcard's base.
    pub domain: DomainName,
    pub authorization_url: String,
    pub challenge_url: String,
    pub txt_value: String,
}

pub struct CreatedOrder {
    pub url: String,
    /// Challenges still to answer; authorizations the CA already holds as
    /// valid (reuse) need none.
    pub challenges: Vec<NewChallenge>,
}

pub enum OrderState {
    Pending,
    Ready,
    Processing,
    Valid,
    /// Why, naming the domain and what the CA said.
    Invalid(String),
}

/// Where a finalize left the certificate.
pub enum Issuance {
    Issued(String),
    /// The CSR went in just now and the CA is still issuing.
    Submitted,
    /// The order is not ready, or the CA is still issuing.
    NotYet,
}

pub struct AcmeClient {
    config: AcmeConfig,
    store: Store,
    cipher: Cipher,
    roots: Arc<rustls::RootCertStore>,
    account: Mutex<Option<Arc<Account>>>,
    /// Orders as last seen, by URL, kept from one step to the next: a step
    /// takes its order out and puts it back. Re-opening an order by URL
    /// costs two requests (a fresh nonce, then the order); a kept one
    /// carries its nonce and, where the step needs no newer state, its
    /// state. A restarted broker re-opens its orders by URL.
    orders: std::sync::Mutex<HashMap<String, Order>>,
}

/// Orders kept at most; beyond, any one is dropped (and re-opened if needed).
const KEPT_ORDERS: usize = 4096;

impl AcmeClient {
    pub fn new(config: &AcmeConfig, store: Store, cipher: Cipher) -> Result<AcmeClient, AcmeError> {
        Ok(AcmeClient {
            config: config.clone(),
            store,
            cipher,
            roots: Arc::new(root_store(config)?),
            account: Mutex::new(None),
            orders: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn http(&self) -> Box<dyn HttpClient> {
        http_client(self.roots.clone())
    }

    /// The account for the configured directory: loaded from the database,
    /// or created once and stored encrypted. Serialized so that concurrent
    /// first orders make one account, not many.
    pub async fn account(&self) -> Result<Arc<Account>, AcmeError> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let directory = self.config.directory_url.clone();
        let lookup = directory.clone();
        let stored = self
            .store
            .read(move |c| Box::pin(async move { queries::acme_account(c, &lookup).await }))
            .await?;
        let account = match stored {
            Some(row) => {
                let json = self
                    .cipher
                    .decrypt(&row.credentials_encrypted)
                    .map_err(|e| AcmeError::Setup(e.to_string()))?;
                let credentials: AccountCredentials = serde_json::from_slice(&json)
                    .map_err(|e| AcmeError::Setup(format!("stored ACME account: {e}")))?;
                Account::builder_with_http(self.http())
                    .from_credentials(credentials)
                    .await?
            }
            None => {
                let contact: Vec<String> = self
                    .config
                    .contact_email
                    .iter()
                    .map(|e| format!("mailto:{e}"))
                    .collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = Account::builder_with_http(self.http())
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        None,
                    )
                    .await?;
                let json = serde_json::to_vec(&credentials)
                    .map_err(|e| AcmeError::Setup(e.to_string()))?;
                let row = AcmeAccountRow {
                    id: new_id(),
                    directory_url: directory,
                    credentials_encrypted: self.cipher.encrypt(&json),
                    created_at: now(),
                };
                tracing::info!(directory = %row.directory_url, "created ACME account");
                self.store
                    .write("insert_acme_account", move |c| {
                        Box::pin(async move { queries::insert_acme_account(c, &row).await })
                    })
                    .await?;
                account
            }
        };
        let account = Arc::new(account);
        *cached = Some(account.clone());
        Ok(account)
    }

    /// The order as kept by the last step, or re-opened from the CA.
    /// `fresh`: a kept order's state is fetched again.
    async fn order(&self, url: &str, fresh: bool) -> Result<Order, AcmeError> {
        let kept = self.kept_orders().remove(url);
        let result = match kept {
            Some(mut order) if fresh => match order.refresh().await {
                Ok(_) => Ok(order),
                Err(e) => Err(e),
            },
            Some(order) => Ok(order),
            None => self.account().await?.order(url.to_string()).await,
        };
        self.forget_unknown_account(result.map_err(AcmeError::from))
            .await
    }

    /// Keeps an order for the next step. One that erred is not kept: the
    /// next attempt re-opens it.
    fn keep(&self, order: Order) {
        let mut kept = self.kept_orders();
        if kept.len() >= KEPT_ORDERS
            && let Some(any) = kept.keys().next().cloned()
        {
            kept.remove(&any);
        }
        kept.insert(order.url().to_string(), order);
    }

    fn kept_orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Order>> {
        self.orders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A CA that lost our account (a test CA restarted, or one that purges
    /// old accounts) gets a new one on the next attempt.
    async fn forget_unknown_account<T>(
        &self,
        result: Result<T, AcmeError>,
    ) -> Result<T, AcmeError> {
        if let Err(AcmeError::AccountUnknown(_)) = &result {
            tracing::warn!(directory = %self.config.directory_url, "ACME account unknown to the CA; it will be registered again");
            *self.account.lock().await = None;
            self.kept_orders().clear();
            let directory = self.config.directory_url.clone();
            self.store
                .write("delete_acme_account", move |c| {
                    Box::pin(async move { queries::delete_acme_account(c, &directory).await })
                })
                .await?;
        }
        result
    }

    pub async fn new_order(&self, domains: &DomainList) -> Result<CreatedOrder, AcmeError> {
        let identifiers: Vec<Identifier> = domains
            .iter()
            .map(|d| Identifier::Dns(d.to_string()))
            .collect();
        let account = self.account().await?;
        let created = account.new_order(&NewOrder::new(&identifiers)).await;
        let mut order = self
            .forget_unknown_account(created.map_err(AcmeError::from))
            .await?;
        let url = order.url().to_string();
        let mut challenges = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let authorization_url = authz.url().to_string();
            let Identifier::Dns(base) = authz.identifier().identifier.clone() else {
                continue;
            };
            let domain = DomainName::parse(&base)
                .map_err(|e| AcmeError::Refused(format!("the CA named an odd identifier: {e}")))?;
            let challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                AcmeError::Refused(format!("the CA offers no dns-01 challenge for {base}"))
            })?;
            challenges.push(NewChallenge {
                domain,
                authorization_url,
                challenge_url: challenge.url.clone(),
                txt_value: challenge.key_authorization().dns_value(),
            });
        }
        self.keep(order);
        Ok(CreatedOrder { url, challenges })
    }

    /// Tells the CA a challenge's record is in place.
    pub async fn answer(&self, order_url: &str, challenge_url: &str) -> Result<(), AcmeError> {
        // The order's state is not needed: its authorizations are fetched.
        let mut order = self.order(order_url, false).await?;
        let found = set_ready(&mut order, challenge_url).await?;
        self.keep(order);
        if !found {
            return Err(AcmeError::Invalid(format!(
                "the order no longer has the challenge {challenge_url}"
            )));
        }
        Ok(())
    }

    pub async fn order_state(&self, order_url: &str) -> Result<OrderState, AcmeError> {
        let mut order = self.order(order_url, true).await?;
        let state = match order.state().status {
            OrderStatus::Pending => OrderState::Pending,
            OrderStatus::Ready => OrderState::Ready,
            OrderStatus::Processing => OrderState::Processing,
            OrderStatus::Valid => OrderState::Valid,
            OrderStatus::Invalid => return Ok(OrderState::Invalid(why_invalid(&mut order).await)),
        };
        self.keep(order);
        Ok(state)
    }

    /// Finalizes with a CSR for `key_pem` (unless already done) and
    /// downloads the PEM chain once the CA has issued it.
    pub async fn finalize(
        &self,
        order_url: &str,
        key_pem: &str,
        domains: &DomainList,
    ) -> Result<Issuance, AcmeError> {
        // Kept by the validation step, its state is the one that step just
        // saw; an order still pending then is looked at again.
        let mut order = self.order(order_url, false).await?;
        if order.state().status == OrderStatus::Pending {
            order.refresh().await?;
        }
        let submitted = match order.state().status {
            OrderStatus::Ready => {
                let csr = csr_der(key_pem, domains)?;
                order.finalize_csr(&csr).await?;
                true
            }
            OrderStatus::Processing | OrderStatus::Valid => false,
            OrderStatus::Pending => {
                self.keep(order);
                return Ok(Issuance::NotYet);
            }
            OrderStatus::Invalid => return Err(AcmeError::Invalid(why_invalid(&mut order).await)),
        };
        let Some(chain) = order.certificate().await? else {
            self.keep(order);
            return Ok(if submitted {
                Issuance::Submitted
            } else {
                Issuance::NotYet
            });
        };
        Ok(Issuance::Issued(chain))
    }
}

/// Marks the order's dns-01 challenge at `challenge_url` ready, unless it
/// is past pending; false if the order has no such challenge.
async fn set_ready(order: &mut Order, challenge_url: &str) -> Result<bool, AcmeError> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if let Some(mut challenge) = authz.challenge(ChallengeType::Dns01)
            && challenge.url == challenge_url
        {
            if challenge.status == instant_acme::ChallengeStatus::Pending {
                challenge.set_ready().await?;
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// The system's roots, plus `ACME_ROOT_CERT` when set (a test CA).
pub fn root_store(config: &AcmeConfig) -> Result<rustls::RootCertStore, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = &config.root_cert {
        let fail = |e: &dyn std::fmt::Display| {
            AcmeError::Setup(format!("ACME_ROOT_CERT {}: {e}", path.display()))
        };
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(&e))? {
            roots
                .add(cert.map_err(|e| fail(&e))?)
                .map_err(|e| fail(&e))?;
        }
    }
    Ok(roots)
}

/// TLS to the CA with aws-lc-rs, trusting these roots.
pub fn client_tls(roots: Arc<rustls::RootCertStore>) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the default provider supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// An HTTPS client for instant-acme that trusts `roots`.
pub fn http_client(roots: Arc<rustls::RootCertStore>) -> Box<dyn HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(roots))
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(https);
    Box::new(client)
}

/// The failed authorizations of an order: which domain, and what the CA said.
async fn why_invalid(order: &mut Order) -> String {
    let order_problem = order.state().error.as_ref().map(|p| p.to_string());
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        if authz.status == AuthorizationStatus::Invalid {
            let domain = authz.identifier().to_string();
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    let detail = problem
                        .detail
                        .clone()
                        .unwrap_or_else(|| problem.to_string());
                    reasons.push(format!("{domain} ({detail})"));
                }
            }
        }
    }
    match (reasons.is_empty(), order_problem) {
        (false, _) => reasons.join("; "),
        (true, Some(problem)) => problem,
        (true, None) => "the ACME server marked the order invalid without saying why".into(),
    }
}

/// How long a rate-limited request must wait. instant-acme keeps the
/// Retry-After header to itself on errors, so this reads the time Let's
/// Encrypt writes into the problem ("..., retry after 2024-06-07 04:06:03
/// UTC: see ..."); without one, an hour.
pub fn rate_limit_wait(detail: &str, now: NaiveDateTime) -> std::time::Duration {
    const DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);
    const MAX: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
    let Some(start) = detail
        .find("retry after ")
        .map(|i| i + "retry after ".len())
    else {
        return DEFAULT;
    };
    let text = detail[start..].get(..19).unwrap_or_default();
    match NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        Ok(at) => (at - now)
            .to_std()
            .unwrap_or_default()
            .clamp(std::time::Duration::from_secs(1), MAX),
        Err(_) => DEFAULT,
    }
}

/// A fresh ECDSA P-256 key, PKCS#8 PEM.
pub fn new_private_key_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("P-256 key generation")
        .serialize_pem()
}

pub fn csr_der(key_pem: &str, domains: &DomainList) -> Result<Vec<u8>, AcmeError> {
    let setup = |e: rcgen::Error| AcmeError::Setup(format!("CSR: {e}"));
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(setup)?;
    let names: Vec<String> = domains.names().iter().map(|d| d.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).map_err(setup)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    Ok(params
        .serialize_request(&key)
        .map_err(setup)?
        .der()
        .to_vec())
}

/// A chain split into leaf and intermediates, with the leaf's expiry.
pub struct IssuedChain {
    pub leaf_pem: String,
    pub chain_pem: String,
    pub expires_at: NaiveDateTime,
}

pub fn parse_chain(pem: &str) -> Result<IssuedChain, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let split = pem.find(END).ok_or("no certificate in the chain")? + END.len();
    let leaf_pem = format!("{}\n", pem[..split].trim());
    let chain_pem = pem[split..].trim_start().to_string();
    let (_, block) = x509_parser::pem::parse_x509_pem(leaf_pem.as_bytes())
        .map_err(|e| format!("leaf certificate PEM: {e:?}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("leaf certificate: {e:?}"))?;
    let expires_at = chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or("leaf certificate expiry out of range")?
        .naive_utc();
    Ok(IssuedChain {
        leaf_pem,
        chain_pem,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn rate_limits_are_waited_out() {
        let detail = "too many certificates (5) already issued for this exact set of domains in \
                      the last 168h0m0s, retry after 2024-06-07 04:06:03 UTC: see \
                      https://letsencrypt.org/docs/rate-limits/";
        let wait = rate_limit_wait(detail, at("2024-06-07 03:06:03"));
        assert_eq!(wait, std::time::Duration::from_secs(3600));
        let wait = rate_limit_wait(detail, at("2024-06-07 04:06:00"));
        assert_eq!(wait, std::time::Duration::from_secs(3));
        // Already past, unreadable or absent: never hammer.
        assert_eq!(
            rate_limit_wait(detail, at("2024-06-08 00:00:00")),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(
            rate_limit_wait("slow down", at("2024-06-07 00:00:00")),
            std::time::Duration::from_secs(3600)
        );
        assert_eq!(
            rate_limit_wait("retry after soon", at("2024-06-07 00:00:00")),
            std::time::Duration::from_secs(3600)
        );
    }

    #[test]
    fn rate_limited_problems_are_recognized() {
        let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "retry after 2024-06-07 04:06:03 UTC",
            "status": 429
        }))
        .unwrap();
        let error = AcmeError::from(instant_acme::Error::Api(problem));
        assert!(matches!(error, AcmeError::RateLimited(_)), "{error}");
        assert!(!error.is_permanent());
    }
}
