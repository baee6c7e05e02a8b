//! The StoreActor is the only writer: writes queue in its mailbox and run in
//! order. That order is also what keeps SQLite free of "database is locked".
//! Reads go straight to the pool.
//!
//! Group commit: the writes that queued up while a transaction ran are
//! committed together in the next one, each in a savepoint of its own, so a
//! write that fails undoes only itself. A caller hears back only after the
//! commit that made its write durable.

use std::collections::VecDeque;

use actix::prelude::*;
use diesel_async::AsyncConnection;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::db::{DbConnection, DbError, Pool};

type WriteFn<T> =
    Box<dyn for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<T, DbError>> + Send>;

/// A queued write, its result type erased: runs the write and keeps the
/// outcome until the commit decides it.
type Job = Box<dyn for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Delivery> + Send>;

/// Hands a write's result to its caller, or the commit's error instead.
type Delivery = Box<dyn FnOnce(Option<&DbError>) + Send>;

/// One unit of work; committed with the others queued beside it.
pub struct Write<T> {
    pub name: &'static str,
    run: WriteFn<T>,
}

impl<T: Send + 'static> Message for Write<T> {
    type Result = Result<T, DbError>;
}

pub struct StoreActor {
    pool: Pool,
    queue: VecDeque<Job>,
    committing: bool,
    /// Writes per transaction at most; 1 turns group commit off.
    max_batch: usize,
}

impl Actor for StoreActor {
    type Context = Context<Self>;
}

impl<T: Send + 'static> Handler<Write<T>> for StoreActor {
    type Result = ResponseFuture<Result<T, DbError>>;

    fn handle(&mut self, write: Write<T>, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let name = write.name;
        let run = write.run;
        let alone = self.max_batch == 1;
        self.queue.push_back(Box::new(move |c: &mut DbConnection| {
            Box::pin(async move {
                // Alone in its transaction a write needs no savepoint.
                let result = if alone {
                    run(c).await
                } else {
                    c.transaction(async move |c| run(c).await).await
                };
                if let Err(e) = &result {
                    tracing::warn!(write = name, error = %e, "write failed");
                }
                Box::new(move |commit_error: Option<&DbError>| {
                    let result = match commit_error {
                        Some(e) => Err(DbError::Connect(format!("commit failed: {e}"))),
                        None => result,
                    };
                    let _ = tx.send(result);
                }) as Delivery
            })
        }));
        // Through the mailbox: writes already in it join this commit.
        if !self.committing {
            self.committing = true;
            ctx.notify(CommitQueued);
        }
        Box::pin(async move {
            rx.await
                .map_err(|_| DbError::Connect("store actor stopped".into()))?
        })
    }
}

/// Commits what queued up while the previous transaction ran.
struct CommitQueued;

impl Message for CommitQueued {
    type Result = ();
}

impl Handler<CommitQueued> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: CommitQueued, ctx: &mut Context<Self>) {
        ctx.spawn(self.commit_queued().into_actor(self).map(|(), actor, ctx| {
            // What queued while this commit ran goes in the next one.
            actor.committing = !actor.queue.is_empty();
            if actor.committing {
                ctx.notify(CommitQueued);
            }
        }));
    }
}

impl StoreActor {
    /// Takes up to `max_batch` queued writes and commits them in one
    /// transaction.
    fn commit_queued(&mut self) -> impl Future<Output = ()> + 'static {
        let take = self.queue.len().min(self.max_batch);
        let jobs: Vec<Job> = self.queue.drain(..take).collect();
        let pool = self.pool.clone();
        async move {
            let mut deliveries: Vec<Delivery> = Vec::with_capacity(jobs.len());
            let committed = match pool.get().await {
                Err(e) => Err(DbError::from(e)),
                Ok(mut conn) => {
                    let deliveries = &mut deliveries;
                    conn.transaction(async move |c| {
                        for job in jobs {
                            deliveries.push(job(c).await);
                        }
                        Ok::<(), DbError>(())
                    })
                    .await
                }
            };
            let error = committed.err();
            for deliver in deliveries {
                deliver(error.as_ref());
            }
        }
    }
}

/// The handle the rest of the broker uses: writes through the actor, reads
/// from the pool.
#[derive(Clone)]
pub struct Store {
    addr: Addr<StoreActor>,
    pool: Pool,
}

/// Writes per transaction at most, when writes queue up.
pub const GROUP_COMMIT: usize = 64;

impl Store {
    /// Starts the StoreActor on its own arbiter; `max_batch` 1 commits each
    /// write alone.
    pub fn start(pool: Pool, max_batch: usize) -> Store {
        let arbiter = Arbiter::new();
        let actor_pool = pool.clone();
        let addr = StoreActor::start_in_arbiter(&arbiter.handle(), move |_| StoreActor {
            pool: actor_pool,
            queue: VecDeque::new(),
            committing: false,
            max_batch: max_batch.max(1),
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
