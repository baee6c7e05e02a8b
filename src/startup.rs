//! Wires the parts together and starts the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;

use actix::Actor;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::acme::AcmeClient;
use crate::actors::{Store, Supervisor};
use crate::config::Config;
use crate::config::DnsProvider;
use crate::crypto::Cipher;
use crate::deps::Deps;
use crate::dns::{ChallengeRecords, CnameChecker};
use crate::osb::{self, AppState};
use crate::{catalog, db};

/// How long in-flight HTTP requests, then running steps, may take to finish
/// at shutdown: together under the 30 seconds platforms commonly allow.
const REQUEST_GRACE_SECONDS: u64 = 10;
/// An idle connection stays open this long. A server that closes one first
/// races the client's next request on it (the client sees the connection
/// reset, not an answer): keep it above the 90 s idle pools of Go's and
/// reqwest's clients. (actix-web's default is 5 s.)
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(120);
const STEP_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the catalog is invalid: {0}")]
    Catalog(String),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("ACME client: {0}")]
    Acme(String),
    #[error("DNS: {0}")]
    Dns(String),
}

/// The broker without its HTTP listener: store, actors and handler state.
/// Benchmarks drive it through an in-process service.
pub struct Broker {
    pub state: web::Data<AppState>,
    /// Held for the life of the broker (SQLite only).
    pub replica_lock: Option<std::fs::File>,
}

impl Broker {
    /// Applies pending migrations and starts the actors. Must run inside an
    /// actix system.
    pub async fn start(config: Config) -> Result<Broker, StartupError> {
        catalog::validate(&catalog::catalog_json(17)).map_err(StartupError::Catalog)?;
        let replica_lock = db::lock_single_replica(&config.database_url)?;
        let applied = db::migrate(&config.database_url).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied database migrations");
        }
        // Reads run in parallel on these (SQLite's each on a blocking
        // thread); 16 served last_operation best under wrk (8: 19.7k req/s,
        // 4: 14.8k, 16: up to 20.2k).
        let pool_size = 16;
        let store = Store::start(
            &config.database_url,
            db::pool(&config.database_url, pool_size).await?,
            crate::actors::store::GROUP_COMMIT,
        )
        .await?;
        let cipher = Cipher::new(&config.encryption_key);
        let acme = AcmeClient::new(&config.acme, store.clone(), cipher.clone())
            .map_err(|e| StartupError::Acme(e.to_string()))?;
        let route53_records = config.dns.provider == DnsProvider::Route53;
        let cloud = match config.aws.plans_in_use() || route53_records {
            true => Some(Arc::new(crate::cloud::Cloud::new(&config.aws).await)),
            false => None,
        };
        let dns = ChallengeRecords::new(&config.dns, cloud.clone())
            .map_err(|e| StartupError::Dns(e.to_string()))?;
        let cname = CnameChecker::new(&config.dns);
        let deps = Deps {
            cloud,
            config: Arc::new(config.clone()),
            store,
            cipher,
            acme: Arc::new(acme),
            dns: Arc::new(dns),
            cname: Arc::new(cname),
            lifecycle: Arc::default(),
        };
        let supervisor = Supervisor::new(deps.clone()).start();
        let state = web::Data::new(AppState {
            username: config.username.clone(),
            password: config.password.clone(),
            deps,
            supervisor,
        });
        Ok(Broker {
            state,
            replica_lock,
        })
    }
}

/// The routes with their shared state and limits, for `App::configure`.
pub fn routes(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    cfg.app_data(state)
        .app_data(web::PayloadConfig::new(256 * 1024))
        .configure(osb::routes);
}

pub struct Application {
    pub port: u16,
    pub deps: Deps,
    server: Server,
    /// Held for the life of the broker (SQLite only).
    _replica_lock: Option<std::fs::File>,
}

impl Application {
    /// Applies pending migrations, starts the actors, and binds the listener.
    /// Must run inside an actix system.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let listen_err = |source| StartupError::Listen {
            addr: config.addr.clone(),
            source,
        };
        let listener = TcpListener::bind(&config.addr).map_err(listen_err)?;
        let port = listener.local_addr().map_err(listen_err)?.port();
        let broker = Broker::start(config.clone()).await?;
        let state = broker.state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .configure(|cfg| routes(cfg, state.clone()))
        })
        .shutdown_timeout(REQUEST_GRACE_SECONDS)
        .keep_alive(KEEP_ALIVE)
        .listen(listener)
        .map_err(listen_err)?
        .run();
        tracing::info!(addr = %config.addr, port, "broker listening");
        Ok(Application {
            port,
            deps: broker.state.deps.clone(),
            server,
            _replica_lock: broker.replica_lock,
        })
    }

    /// Serves until SIGTERM or SIGINT, then lets running steps finish (up to
    /// a bound) so that a restart resumes from recorded progress.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await?;
        let lifecycle = self.deps.lifecycle.clone();
        tracing::info!(
            running = lifecycle.running_steps(),
            "stopping: waiting for running steps"
        );
        let left = lifecycle.drain(STEP_GRACE).await;
        if left > 0 {
            tracing::warn!(
                left,
                "stopping with steps unfinished; they run again at the next start"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}
