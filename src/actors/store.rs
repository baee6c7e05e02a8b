//! The StoreActor is the only writer: writes queue in its mailbox and run one
//! at a time, each in a transaction. That order is also what keeps SQLite free
//! of "database is locked". Reads go straight to the pool.

use actix::prelude::*;
use diesel_async::AsyncConnection;
use futures_util::future::BoxFuture;

use crate::db::{DbConnection, DbError, Pool};

type WriteFn<T> =
    Box<dyn for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<T, DbError>> + Send>;

/// One unit of work, committed as one transaction.
pub struct Write<T> {
    pub name: &'static str,
    run: WriteFn<T>,
}

impl<T: Send + 'static> Message for Write<T> {
    type Result = Result<T, DbError>;
}

pub struct StoreActor {
    pool: Pool,
}

impl Actor for StoreActor {
    type Context = Context<Self>;
}

impl<T: Send + 'static> Handler<Write<T>> for StoreActor {
    type Result = AtomicResponse<Self, Result<T, DbError>>;

    fn handle(&mut self, write: Write<T>, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let name = write.name;
        let run = write.run;
        AtomicResponse::new(Box::pin(
            async move {
                let mut conn = pool.get().await?;
                let result = conn.transaction(async move |c| run(c).await).await;
                if let Err(e) = &result {
                    tracing::warn!(write = name, error = %e, "write failed");
                }
                result
            }
            .into_actor(self),
        ))
    }
}

/// The handle the rest of the broker uses: writes through the actor, reads
/// from the pool.
#[derive(Clone)]
pub struct Store {
    addr: Addr<StoreActor>,
    pool: Pool,
}

impl Store {
    /// Starts the StoreActor on its own arbiter.
    pub fn start(pool: Pool) -> Store {
        let arbiter = Arbiter::new();
        let actor_pool = pool.clone();
        let addr = StoreActor::start_in_arbiter(&arbiter.handle(), move |_| StoreActor {
            pool: actor_pool,
        });
        Store { addr, pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn write<T, F>(&self, name: &'static str, run: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<T, DbError>>
            + Send
            + 'static,
    {
        self.addr
            .send(Write {
                name,
                run: Box::new(run),
            })
            .await
            .map_err(|e| DbError::Connect(format!("store actor unavailable: {e}")))?
    }

    pub async fn read<T, F>(&self, run: F) -> Result<T, DbError>
    where
        F: for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<T, DbError>>,
    {
        let mut conn = self.pool.get().await?;
        run(&mut conn).await
    }
}
