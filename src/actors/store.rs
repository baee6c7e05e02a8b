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
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::config::DatabaseUrl;
use crate::db::{DbConnection, DbError, Pool};

type WriteFn<T> =
    Box<dyn for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<T, DbError>> + Send>;

/// A queued write, its result type erased: runs the write and keeps the
/// outcome until the commit decides it. True beside the delivery: the write
/// failed.
type Job = Box<dyn for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, (Delivery, bool)> + Send>;

/// Hands a write's result to its caller, or the commit's error instead.
type Delivery = Box<dyn FnOnce(Option<&DbError>) + Send>;

/// One unit of work; committed with the others queued beside it. The
/// result goes straight to the caller's `reply`: an actix response future
/// would instead wait in the actor's context, which polls every one of them
/// on each wake-up.
pub struct Write<T> {
    pub name: &'static str,
    run: WriteFn<T>,
    reply: oneshot::Sender<Result<T, DbError>>,
}

impl<T: Send + 'static> Message for Write<T> {
    type Result = ();
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
    type Result = ();

    fn handle(&mut self, write: Write<T>, ctx: &mut Context<Self>) {
        let Write {
            name,
            run,
            reply: tx,
        } = write;
        self.queue.push_back(Box::new(move |c: &mut DbConnection| {
            Box::pin(async move {
                let result = run(c).await;
                let failed = result.is_err();
                if let Err(e) = &result {
                    tracing::warn!(write = name, error = %e, "write failed");
                }
                let deliver = Box::new(move |commit_error: Option<&DbError>| {
                    // A write's own error says more than the rollback it caused.
                    let result = match (result, commit_error) {
                        (Ok(_), Some(e)) => Err(DbError::Connect(format!("commit failed: {e}"))),
                        (result, _) => result,
                    };
                    let _ = tx.send(result);
                }) as Delivery;
                (deliver, failed)
            })
        }));
        // Through the mailbox: writes already in it join this commit.
        if !self.committing {
            self.committing = true;
            ctx.notify(CommitQueued);
        }
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
            let (began, writes) = (std::time::Instant::now(), jobs.len());
            let committed = match pool.get().await {
                Err(e) => Err(DbError::from(e)),
                Ok(mut conn) => {
                    let deliveries = &mut deliveries;
                    conn.transaction(async move |c| run_in_savepoints(c, jobs, deliveries).await)
                        .await
                }
            };
            tracing::debug!(
                writes,
                micros = began.elapsed().as_micros() as u64,
                "committed queued writes"
            );
            let error = committed.err();
            for deliver in deliveries {
                deliver(error.as_ref());
            }
        }
    }
}

/// Runs the jobs in one transaction, each in a savepoint of its own so that a
/// write that fails undoes only itself. The savepoints are managed here, not
/// by nested `transaction` calls: ending one and opening the next is then one
/// round trip to the database, not two, and the last needs none (the commit
/// ends it). A job alone needs no savepoint: if it fails, the whole
/// transaction is rolled back.
async fn run_in_savepoints(
    c: &mut DbConnection,
    jobs: Vec<Job>,
    deliveries: &mut Vec<Delivery>,
) -> Result<(), DbError> {
    let alone = jobs.len() == 1;
    if !alone {
        c.batch_execute("SAVEPOINT queued_write").await?;
    }
    let last = jobs.len().saturating_sub(1);
    for (i, job) in jobs.into_iter().enumerate() {
        let (deliver, failed) = job(c).await;
        deliveries.push(deliver);
        let between = match (alone, failed, i == last) {
            (true, true, _) => {
                return Err(DbError::Query(diesel::result::Error::RollbackTransaction));
            }
            (true, false, _) | (false, false, true) => continue,
            (false, true, true) => "ROLLBACK TO SAVEPOINT queued_write",
            (false, true, false) => {
                "ROLLBACK TO SAVEPOINT queued_write; RELEASE SAVEPOINT queued_write; SAVEPOINT queued_write"
            }
            (false, false, false) => "RELEASE SAVEPOINT queued_write; SAVEPOINT queued_write",
        };
        c.batch_execute(between).await?;
    }
    Ok(())
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
    /// Starts the StoreActor on its own arbiter, with a connection of its
    /// own made there, so that its I/O is polled on that thread and not
    /// behind other work on the thread that happened to make a pooled one
    /// (a PostgreSQL connection's socket is driven by a task on the runtime
    /// that made it). Reads use `reads`. `max_batch` 1 commits each write
    /// alone.
    pub async fn start(url: &DatabaseUrl, reads: Pool, max_batch: usize) -> Result<Store, DbError> {
        let arbiter = Arbiter::new();
        let (started, addr) = oneshot::channel();
        let url = url.clone();
        arbiter.spawn(async move {
            let actor = crate::db::pool(&url, 1).await.map(|writes| {
                StoreActor {
                    pool: writes,
                    queue: VecDeque::new(),
                    committing: false,
                    max_batch: max_batch.max(1),
                }
                .start()
            });
            let _ = started.send(actor);
        });
        let addr = addr
            .await
            .map_err(|_| DbError::Connect("the store's arbiter stopped".into()))??;
        Ok(Store { addr, pool: reads })
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
        let (reply, result) = oneshot::channel();
        // Unbounded: a write waits in the actor's queue, not for mailbox room.
        self.addr.do_send(Write {
            name,
            run: Box::new(run),
            reply,
        });
        result
            .await
            .map_err(|_| DbError::Connect("store actor stopped".into()))?
    }

    pub async fn read<T, F>(&self, run: F) -> Result<T, DbError>
    where
        F: for<'c> FnOnce(&'c mut DbConnection) -> BoxFuture<'c, Result<T, DbError>>,
    {
        let mut conn = self.pool.get().await?;
        run(&mut conn).await
    }
}
