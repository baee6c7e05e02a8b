//! One `spawn_app` per test: a broker in this process on a random port, with
//! its own database (a SQLite file, or a fresh PostgreSQL database), talking
//! to the real Pebble and BIND that `./dev test` started.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use dns_update::{DnsRecord, DnsRecordType, DnsUpdater, TsigAlgorithm};
use domain_broker::config::{DatabaseUrl, Env};
use domain_broker::db::{self, Pool};
use domain_broker::startup::Application;
use serde_json::{Value, json};

pub const SERVICE_ID: &str = "8c16de31-104a-47b0-ba79-25e747be91d6";
pub const CERT_PLAN: &str = "2fd4db4f-9a61-4f5f-8ecc-4457bd823d61";
pub const DOMAIN_PLAN: &str = "6f60835c-8964-4f1f-a19a-579fb27ce694";
pub const CDN_PLAN: &str = "1cc78b0c-c296-48f5-9182-0b38404f79ef";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once per backend: `both_backends!(name);` makes
/// `name::sqlite` and `name::postgres` from `async fn name(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./dev test, which starts Pebble, BIND and PostgreSQL")
    })
}

pub fn random_label() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A database of its own for one test (or one broker process).
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> DatabaseUrl {
    match backend {
        Backend::Sqlite => DatabaseUrl::Sqlite(dir.join("broker.sqlite")),
        Backend::Postgres => {
            let server = env("TEST_POSTGRES_URL");
            let name = format!("test_{}", random_label());
            let mut conn = AsyncPgConnection::establish(&server)
                .await
                .expect("PostgreSQL answers");
            conn.batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let base = server.rsplit_once('/').expect("URL has a database").0;
            DatabaseUrl::Postgres(format!("{base}/{name}"))
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub username: String,
    pub password: String,
    pub version: &'static str,
    pub pool: Pool,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// The broker's environment for tests: what `./dev` exported, plus
/// per-test credentials, database and overrides.
pub fn broker_env(database_url: &DatabaseUrl, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.insert("BROKER_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("BROKER_USERNAME".into(), "test-user".into());
    vars.insert("BROKER_PASSWORD".into(), format!("pw-{}", random_label()));
    vars.insert("DATABASE_URL".into(), database_url.to_string());
    vars.insert("DNS_PROPAGATION_SLEEP_TIME".into(), "0".into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    domain_broker::telemetry::init();
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(backend, dir.path()).await;
    let vars = broker_env(&database_url, extra);
    let config = Env(|name: &str| vars.get(name).cloned())
        .config()
        .expect("test configuration");
    let (username, password) = (config.username.clone(), config.password.clone());
    let app = Application::build(config).await.expect("broker starts");
    let address = format!("http://127.0.0.1:{}", app.port);
    actix_web::rt::spawn(app.run_until_stopped());
    let pool = db::pool(&database_url, 2).await.unwrap();
    TestApp {
        address,
        client: reqwest::Client::new(),
        username,
        password,
        version: "2.17",
        pool,
        _dir: dir,
    }
}

impl TestApp {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(self.version, method, path)
    }

    /// A request from a platform speaking another API version.
    pub fn request_as(
        &self,
        version: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
            .basic_auth(&self.username, Some(&self.password))
            .header("X-Broker-API-Version", version)
    }

    pub async fn provision(&self, id: &str, body: &Value) -> reqwest::Response {
        self.request(
            reqwest::Method::PUT,
            &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
        )
        .json(body)
        .send()
        .await
        .unwrap()
    }

    pub async fn deprovision(&self, id: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::DELETE,
            &format!("/v2/service_instances/{id}?accepts_incomplete=true&service_id={SERVICE_ID}&plan_id={CERT_PLAN}"),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn last_operation(&self, id: &str) -> (u16, Value) {
        let res = self
            .request(
                reqwest::Method::GET,
                &format!("/v2/service_instances/{id}/last_operation"),
            )
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls until the latest operation says `description` (20 s at most).
    pub async fn wait_for_description(&self, id: &str, description: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = self.last_operation(id).await;
            if body["description"] == description {
                return;
            }
            assert!(Instant::now() < deadline, "never \"{description}\": {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the latest operation is no longer in progress.
    pub async fn wait_done(&self, id: &str) -> Value {
        wait_done(|| self.last_operation(id)).await
    }

    pub async fn bind(&self, id: &str, binding: &str, body: &Value) -> reqwest::Response {
        self.request(
            reqwest::Method::PUT,
            &format!("/v2/service_instances/{id}/service_bindings/{binding}"),
        )
        .json(body)
        .send()
        .await
        .unwrap()
    }

    /// Rows of a table, to prove a refused request changed nothing.
    pub async fn count(&self, table: &str) -> i64 {
        count_rows(&self.pool, table).await
    }

    pub async fn snapshot(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in TABLES {
            counts.push(self.count(table).await);
        }
        counts
    }
}

pub const TABLES: &[&str] = &[
    "acme_accounts",
    "service_instances",
    "instance_domains",
    "operations",
    "certificates",
    "challenges",
    "dns_records",
    "bindings",
    "cloud_resources",
];

pub async fn count_rows(pool: &Pool, table: &str) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = pool.get().await.unwrap();
    let rows: Vec<Count> = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
        .load(&mut *conn)
        .await
        .unwrap();
    rows[0].n
}

pub async fn wait_done<F, Fut>(poll: F) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = poll().await;
        assert_eq!(status, 200, "last_operation answered {status}: {body}");
        if body["state"] != "in progress" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "operation still in progress: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn provision_body(domains: &str) -> Value {
    json!({
        "service_id": SERVICE_ID,
        "plan_id": CERT_PLAN,
        "organization_guid": "org-1",
        "space_guid": "space-1",
        "parameters": {"domains": domains},
    })
}

pub fn bind_body() -> Value {
    json!({"service_id": SERVICE_ID, "plan_id": CERT_PLAN, "bind_resource": {"app_guid": "app-1"}})
}

// ---- the user's side of DNS: the customer.test zone ----

fn customer_dns() -> DnsUpdater {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(env("TEST_CUSTOMER_TSIG_SECRET"))
        .unwrap();
    DnsUpdater::new_rfc2136_tsig(
        format!("tcp://{}", env("RFC2136_SERVER")).as_str(),
        env("TEST_CUSTOMER_TSIG_KEY_NAME"),
        secret,
        TsigAlgorithm::HmacSha256,
    )
    .unwrap()
}

/// A fresh domain under the customer zone, with nothing delegated yet.
pub fn new_domain() -> String {
    format!("{}.{}", random_label(), env("TEST_CUSTOMER_ZONE"))
}

/// Sets a CNAME in the customer zone, as a user would.
pub async fn set_cname(name: &str, target: &str) {
    customer_dns()
        .set_rrset(
            name,
            DnsRecordType::CNAME,
            1,
            vec![DnsRecord::CNAME(target.to_string())],
            env("TEST_CUSTOMER_ZONE").as_str(),
        )
        .await
        .unwrap();
}

/// What the README tells users to create: `_acme-challenge.<d>` delegated to
/// the broker's zone.
pub async fn delegate(domain: &str) {
    let base = domain.trim_start_matches("*.");
    set_cname(
        &format!("_acme-challenge.{base}"),
        &format!("_acme-challenge.{base}.{}", env("DNS_ROOT_DOMAIN")),
    )
    .await;
}

/// A new domain, delegated.
pub async fn delegated_domain() -> String {
    let domain = new_domain();
    delegate(&domain).await;
    domain
}

/// The TXT values BIND serves at a name (no recursion needed: the broker's
/// own zone).
pub fn txt_values(name: &str) -> Vec<String> {
    let server = env("DNS_VERIFICATION_SERVER");
    let port = server.rsplit(':').next().unwrap();
    let out = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", port, "+short", "TXT", name])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_matches('"').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn challenge_txt_name(domain: &str) -> String {
    format!(
        "_acme-challenge.{}.{}",
        domain.trim_start_matches("*."),
        env("DNS_ROOT_DOMAIN")
    )
}
