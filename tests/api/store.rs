//! The store: the StoreActor's group commit (writes queued together share
//! a transaction, and a write that fails undoes only itself, alone or among
//! others), and the pool's connections outliving PostgreSQL's.

use diesel::sql_query;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use domain_broker::actors::store::{GROUP_COMMIT, Store};
use domain_broker::db::{self, DbError};

use crate::both_backends;
use crate::helpers::{
    Backend, delegated_domain, fresh_database, provision_body, random_label, spawn_app,
};

async fn scratch_store(backend: Backend, dir: &std::path::Path) -> Store {
    let url = fresh_database(backend, dir).await;
    let pool = db::pool(&url, 4).await.unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE scratch (id TEXT PRIMARY KEY)")
        .await
        .unwrap();
    Store::start(&url, pool, GROUP_COMMIT).await.unwrap()
}

/// Inserts each id in turn, in one write; a repeated id fails it.
async fn insert(store: &Store, ids: &[&str]) -> Result<(), DbError> {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    store
        .write("insert_scratch", move |c| {
            Box::pin(async move {
                for id in ids {
                    sql_query(format!("INSERT INTO scratch (id) VALUES ('{id}')"))
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
        })
        .await
}

async fn stored(store: &Store) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    store
        .read(|c| {
            Box::pin(async move {
                Ok(sql_query("SELECT id FROM scratch ORDER BY id")
                    .load::<Row>(c)
                    .await?)
            })
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

async fn a_failing_write_undoes_only_itself(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = scratch_store(backend, dir.path()).await;
    insert(&store, &["taken"]).await.unwrap();

    // Alone in its transaction: the first insert is undone with the second.
    let alone = insert(&store, &["alone", "taken"]).await;
    assert!(matches!(alone, Err(DbError::Query(_))), "{alone:?}");
    assert_eq!(stored(&store).await, ["taken"]);

    // Among others queued beside it (the first write commits alone while
    // the rest queue; they share the next transaction): each failing write
    // is undone, each other write is kept and told so.
    let ids: Vec<String> = (0..40).map(|i| format!("w{i:02}")).collect();
    let writes = ids.iter().enumerate().map(|(i, id)| {
        let store = &store;
        async move {
            match i % 3 {
                0 => insert(store, &[id, "taken"]).await,
                _ => insert(store, &[id]).await,
            }
        }
    });
    let results = futures_util::future::join_all(writes).await;
    let mut expected = vec!["taken".to_string()];
    for (i, (id, result)) in ids.iter().zip(&results).enumerate() {
        if i % 3 == 0 {
            assert!(result.is_err(), "{id} should have failed");
        } else {
            assert!(result.is_ok(), "{id}: {result:?}");
            expected.push(id.clone());
        }
    }
    expected.sort();
    assert_eq!(stored(&store).await, expected);
}

both_backends!(a_failing_write_undoes_only_itself);

/// PostgreSQL ends every connection of the broker (as a restart or an
/// operator's `pg_terminate_backend` would): the next requests, reads and
/// writes, get new connections and succeed, with no `SELECT 1` at checkout.
#[actix_web::test]
async fn terminated_postgres_connections_are_replaced() {
    let app = spawn_app(Backend::Postgres).await;
    let (before, _) = app.last_operation("never-provisioned").await;
    let (done, _) = app.last_operation("never-provisioned").await;
    assert_eq!(before, done);

    let mut conn = app.pool.get().await.unwrap();
    let ended = sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    assert!(ended >= 1, "the broker held no connection");
    // The driver learns of the close from the socket.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    for _ in 0..20 {
        assert_eq!(app.last_operation("never-provisioned").await.0, before);
    }
    let id = format!("after-terminate-{}", random_label());
    let domain = delegated_domain().await;
    assert_eq!(
        app.provision(&id, &provision_body(&domain)).await.status(),
        202
    );
    assert_eq!(app.wait_done(&id).await["state"], "succeeded");
}
