//! The database: one code path for PostgreSQL and SQLite.

pub mod models;
pub mod queries;
pub mod schema;

use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::config::DatabaseUrl;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// The PostgreSQL advisory lock held while migrating ("dbmg").
const MIGRATION_LOCK: i64 = 0x6462_6d67;

/// The embedded backend behind an async face.
pub type AsyncSqliteConnection = SyncConnectionWrapper<SqliteConnection, OnCallingThread>;

/// Runs a SQLite connection's queries right on the thread that awaits them,
/// not on the blocking pool. They take tens of microseconds, and WAL lets
/// reads run beside the writer. A hop to the blocking pool and back cost
/// more than that, and under load the answer then waited for the awaiting
/// thread to get to it, the connection checked out all the while (reads
/// during provision_load at N = 100: p50 2.5 ms and 18 ms on average
/// waiting for a connection; on the calling thread, 48 µs and none). A
/// query's future is ready at once, so none is ever dropped half done.
pub struct OnCallingThread;

impl SpawnBlocking for OnCallingThread {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        std::future::ready(Ok(task())).boxed()
    }

    fn get_runtime() -> Self {
        OnCallingThread
    }
}

/// A connection to either backend; queries written once run on both.
// One connection per pool slot: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(diesel::MultiConnection)]
#[diesel_async]
pub enum DbConnection {
    Pg(AsyncPgConnection),
    Sqlite(AsyncSqliteConnection),
}

pub type Pool = bb8::Pool<AsyncDieselConnectionManager<DbConnection>>;
pub type PooledConnection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<DbConnection>>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("could not connect to the database: {0}")]
    Connect(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for DbError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        DbError::Connect(e.to_string())
    }
}

// WAL lets readers run beside the one writer; the busy timeout covers the
// short moments when SQLite still takes a lock (checkpoints, a second process).
// FULL: a commit (say, a DNS record listed before it is written) survives a
// power cut, not only a crash of the process.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";

async fn establish(url: DatabaseUrl) -> diesel::ConnectionResult<DbConnection> {
    match url {
        DatabaseUrl::Postgres(url) => AsyncPgConnection::establish(&url)
            .await
            .map(DbConnection::Pg),
        DatabaseUrl::Sqlite(path) => {
            let mut conn = AsyncSqliteConnection::establish(&path.to_string_lossy()).await?;
            conn.batch_execute(SQLITE_PRAGMAS)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(DbConnection::Sqlite(conn))
        }
    }
}

/// An INSERT or UPDATE of fixed shape, prepared once per connection and
/// then reused. Diesel never caches those (their SQL can vary with the
/// values: a batch's length, an `Option` written as DEFAULT), so each
/// would be prepared anew: on PostgreSQL a second round trip per
/// statement, on the single writer's connection. Cached by its SQL text,
/// a statement whose shape varies only takes one entry per shape.
#[derive(Debug, Clone, Copy)]
pub struct Reused<Q>(pub Q);

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Reused<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Reused<Q> {
    // No static id: the cache is keyed by the SQL text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, Conn> diesel_async::RunQueryDsl<Conn> for Reused<Q> {}

/// Whether a pooled connection is still open, asked of the driver.
fn open(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    use diesel_async::pooled_connection::PoolableConnection;
    let closed = match conn {
        DbConnection::Pg(pg) => pg.is_broken(),
        DbConnection::Sqlite(_) => false,
    };
    if closed {
        return Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new("the connection to PostgreSQL has closed".to_string()),
        ));
    }
    Ok(())
}

/// Builds the pool. Connections are made lazily, except the first, which
/// proves the settings right at start-up.
pub async fn pool(url: &DatabaseUrl, max_size: u32) -> Result<Pool, DbError> {
    if let DatabaseUrl::Sqlite(path) = url {
        create_parent_dir(path)?;
    }
    let url_for_setup = url.clone();
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |_| establish(url_for_setup.clone()).boxed());
    // Checking a connection with a `SELECT 1` at every checkout would double
    // each read. A SQLite connection is a file handle that cannot drop out;
    // a PostgreSQL connection's driver knows when its socket has closed (a
    // restarted server, a terminated backend), and that is checked instead.
    config.recycling_method = if url.is_sqlite() {
        RecyclingMethod::Fast
    } else {
        RecyclingMethod::CustomFunction(Box::new(|conn| Box::pin(std::future::ready(open(conn)))))
    };
    let manager = AsyncDieselConnectionManager::new_with_config(url.to_string(), config);
    let pool = bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(std::time::Duration::from_secs(10))
        .build(manager)
        .await
        .map_err(|e| DbError::Connect(e.to_string()))?;
    drop(pool.get().await?);
    Ok(pool)
}

/// Applies pending migrations; returns the versions applied.
pub async fn migrate(url: &DatabaseUrl) -> Result<Vec<String>, DbError> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<String>, DbError> {
        use diesel::Connection;
        let applied = match url {
            DatabaseUrl::Postgres(url) => {
                type SyncPg = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
                    AsyncPgConnection,
                >;
                let mut conn = <SyncPg as diesel::Connection>::establish(&url)
                    .map_err(|e| DbError::Connect(e.to_string()))?;
                // Replicas starting together take turns; the lock ends with
                // the connection.
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    &format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"),
                )?;
                run(&mut conn, POSTGRES_MIGRATIONS)?
            }
            DatabaseUrl::Sqlite(path) => {
                create_parent_dir(&path)?;
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(|e| DbError::Connect(e.to_string()))?;
                diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)?;
                run(&mut conn, SQLITE_MIGRATIONS)?
            }
        };
        Ok(applied)
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))?
}

/// SQLite serves one broker: a second replica on the same file would drive
/// the same instances twice. The returned lock is held while the broker runs.
pub fn lock_single_replica(url: &DatabaseUrl) -> Result<Option<std::fs::File>, DbError> {
    let DatabaseUrl::Sqlite(path) = url else {
        return Ok(None);
    };
    create_parent_dir(path)?;
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| DbError::Connect(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbError::Connect(format!(
            "another domain-broker already runs on {} (it holds {}); SQLite supports one \
             broker at a time: stop the other one, or use PostgreSQL (DATABASE_URL=postgres://...) \
             to run several replicas",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(DbError::Connect(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

/// The embedded database file is created on first start, folder included.
fn create_parent_dir(path: &std::path::Path) -> Result<(), DbError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| {
            DbError::Connect(format!("cannot create directory {}: {e}", dir.display()))
        }),
        None => Ok(()),
    }
}

fn run<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<Vec<String>, DbError>
where
    C: MigrationHarness<C::Backend> + diesel::Connection,
{
    conn.run_pending_migrations(migrations)
        .map(|versions| versions.iter().map(|v| v.to_string()).collect())
        .map_err(|e| DbError::Migration(e.to_string()))
}
