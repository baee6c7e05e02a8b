//! A CA that says "rateLimited": Pebble cannot, so a proxy in front of it
//! answers new orders with Let's Encrypt's rate-limit problem (429, the
//! problem document, Retry-After, a real nonce) until a given time, and
//! passes everything else to Pebble. Pebble builds its URLs from the Host
//! header, which the proxy keeps, so the broker talks ACME to the proxy
//! throughout and every signature still checks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Timelike, Utc};
use domain_broker::acme;
use domain_broker::config::AcmeConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::*;

const NEW_ORDER: &str = "/order-plz";

struct RateLimitingCa {
    directory_url: String,
    /// When each new-order request came, and whether it was refused.
    new_orders: Arc<Mutex<Vec<(Instant, bool)>>>,
}

impl RateLimitingCa {
    async fn start(limited_until: DateTime<Utc>) -> RateLimitingCa {
        let pebble = env("ACME_DIRECTORY_URL");
        let upstream = pebble.trim_end_matches("/dir").to_string();
        let root = std::path::PathBuf::from(env("ACME_ROOT_CERT"));
        let pki = root.parent().unwrap();
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(pki.join("localhost.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(pki.join("localhost-key.pem")).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let roots = acme::root_store(&AcmeConfig {
            directory_url: pebble.clone(),
            root_cert: Some(root.clone()),
            contact_email: None,
            poll_timeout: Duration::from_secs(90),
        })
        .unwrap();
        let client = http1_client(roots);
        let new_orders = Arc::new(Mutex::new(Vec::new()));
        let seen = new_orders.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, client, seen, upstream) = (
                    acceptor.clone(),
                    client.clone(),
                    seen.clone(),
                    upstream.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Some((head, body)) = read_request(&mut tls).await else {
                        return;
                    };
                    let response =
                        answer(&head, body, &client, &upstream, limited_until, &seen).await;
                    let _ = tls.write_all(&response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        RateLimitingCa {
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            new_orders,
        }
    }
}

/// A client to Pebble over HTTP/1.1, where the Host header is sent as
/// given (HTTP/2 would put Pebble's own address in `:authority`).
fn http1_client(roots: rustls::RootCertStore) -> Arc<dyn instant_acme::HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(acme::client_tls(Arc::new(roots)))
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Arc::new(client)
}

/// One HTTP/1.1 request: the head's lines, and the body.
async fn read_request(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<(Vec<String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head: Vec<String> = String::from_utf8_lossy(&buf[..end])
        .split("\r\n")
        .map(str::to_string)
        .collect();
    let length: usize = head
        .iter()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

async fn answer(
    head: &[String],
    body: Vec<u8>,
    client: &Arc<dyn instant_acme::HttpClient>,
    upstream: &str,
    limited_until: DateTime<Utc>,
    seen: &Mutex<Vec<(Instant, bool)>>,
) -> Vec<u8> {
    let mut parts = head[0].split(' ');
    let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let send = |method: &str, path: &str, body: Vec<u8>| {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{upstream}{path}"));
        for (name, value) in &headers {
            if !["connection", "content-length"].contains(&name.to_ascii_lowercase().as_str()) {
                request = request.header(name, value);
            }
        }
        client.request(request.body(body.into()).unwrap())
    };
    if method == "POST" && path == NEW_ORDER {
        let refused = Utc::now() < limited_until;
        seen.lock().unwrap().push((Instant::now(), refused));
        if refused {
            // A real nonce, so that the broker's next request is good.
            let nonce = send("HEAD", "/nonce-plz", Vec::new()).await.unwrap();
            let nonce = nonce.parts.headers["replay-nonce"]
                .to_str()
                .unwrap()
                .to_string();
            let problem = serde_json::json!({
                "type": "urn:ietf:params:acme:error:rateLimited",
                "detail": format!(
                    "Error creating new order :: too many new orders (10) from this account \
                     in the last 3h0m0s, retry after {}: see https://letsencrypt.org/docs/rate-limits/",
                    limited_until.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                "status": 429,
            })
            .to_string();
            let wait = (limited_until - Utc::now()).num_seconds().max(1);
            return format!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/problem+json\r\n\
                 Replay-Nonce: {nonce}\r\nRetry-After: {wait}\r\nLink: <https://{host}/dir>;rel=\"index\"\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{problem}",
                problem.len()
            )
            .into_bytes();
        }
    }
    let mut response = send(method, path, body).await.unwrap();
    let bytes: Bytes = response.body.into_bytes().await.unwrap();
    let mut out = format!("HTTP/1.1 {}\r\n", response.parts.status).into_bytes();
    for (name, value) in &response.parts.headers {
        if !["connection", "content-length", "transfer-encoding"].contains(&name.as_str()) {
            out.extend_from_slice(format!("{name}: ").as_bytes());
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&bytes);
    out
}

/// A CA that answers rateLimited until a time: the broker waits until
/// then without asking again (no attempt spent, no hammering), then the
/// order goes through.
async fn rate_limited_orders_wait_for_the_time_given(backend: Backend) {
    // A whole second, as Let's Encrypt writes it.
    let limited_until = (Utc::now() + chrono::Duration::seconds(4))
        .with_nanosecond(0)
        .unwrap();
    let ca = RateLimitingCa::start(limited_until).await;
    let app = spawn_app_with(backend, &[("ACME_DIRECTORY_URL", &ca.directory_url)]).await;
    let domain = delegated_domain().await;
    let id = format!("limited-{}", random_label());
    let started = Instant::now();
    assert_eq!(
        app.provision(&id, &provision_body(&domain)).await.status(),
        202
    );
    let done = app.wait_done(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let orders = ca.new_orders.lock().unwrap().clone();
    assert_eq!(
        orders.iter().filter(|(_, refused)| *refused).count(),
        1,
        "asked again before the time given: {orders:?}"
    );
    let (refused_at, _) = orders[0];
    let accepted_at = orders.iter().find(|(_, refused)| !refused).unwrap().0;
    let waited = accepted_at - refused_at;
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

both_backends!(rate_limited_orders_wait_for_the_time_given);
