//! The Supervisor owns `instance id -> InstanceActor`, routes messages to
//! them, spreads them over one arbiter per core, and starts again any that
//! died: everything an InstanceActor needs is in the database. Its timer
//! resumes stalled operations and starts renewals, spread out and capped.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use rand::Rng;

use super::{BrokerError, InstanceActor, Renew, Wake};
use crate::db::models::now;
use crate::db::{DbError, queries};
use crate::deps::Deps;
use crate::domain::{Action, renew_at};

pub struct Supervisor {
    deps: Deps,
    instances: HashMap<String, Addr<InstanceActor>>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    /// Renewals chosen by a sweep whose jittered start has not come yet.
    pending_renewals: HashSet<String>,
    sweeping: bool,
}

impl Supervisor {
    pub fn new(deps: Deps) -> Supervisor {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Supervisor {
            deps,
            instances: HashMap::new(),
            arbiters: (0..cores).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
            pending_renewals: HashSet::new(),
            sweeping: false,
        }
    }

    /// The live actor of an instance, started (or started again) on demand.
    fn actor(&mut self, id: &str) -> Addr<InstanceActor> {
        if let Some(addr) = self.instances.get(id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let (actor_id, deps) = (id.to_string(), self.deps.clone());
        let addr = InstanceActor::start_in_arbiter(&arbiter.handle(), move |_| {
            InstanceActor::new(actor_id, deps)
        });
        self.instances.insert(id.to_string(), addr.clone());
        addr
    }

    /// Starts an actor for every unfinished operation that no other replica
    /// drives: at start-up, and after a replica died and its lease lapsed.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        // Actors of deleted or unknown instances stop themselves; forget them.
        self.instances.retain(|_, addr| addr.connected());
        let store = self.deps.store.clone();
        let replica = self.deps.config.replica.id.clone();
        ctx.spawn(
            async move {
                store
                    .read(move |c| {
                        Box::pin(async move {
                            queries::resumable_instance_ids(c, &replica, now()).await
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, act, _| match result {
                Ok(ids) => {
                    for id in ids {
                        // A new actor drives at start; a running one is asked
                        // to, in case it missed the operation.
                        act.actor(&id).do_send(Wake);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list unfinished operations"),
            }),
        );
    }

    /// Starts renewals of the certificates that are due.
    fn renew_due(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let store = self.deps.store.clone();
        let renew_before_days = self.deps.config.renewal.renew_before_days;
        let horizon = now() + chrono::Duration::days(renew_before_days.into());
        ctx.spawn(
            async move {
                store
                    .read(move |c| {
                        Box::pin(async move {
                            let candidates = queries::renewal_candidates(c, horizon).await?;
                            let renewing =
                                queries::count_running(c, Action::Renew.as_str()).await?;
                            Ok::<_, DbError>((candidates, renewing))
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.sweeping = false;
                let (candidates, renewing) = match result {
                    Ok(found) => found,
                    Err(e) => return tracing::error!(error = %e, "renewal sweep failed"),
                };
                let due: Vec<(String, String)> = candidates
                    .into_iter()
                    .filter_map(|(id, certificate, issued, expires)| {
                        let at = renew_at(issued?, expires?, renew_before_days);
                        (at <= now()).then_some((id, certificate))
                    })
                    .filter(|(id, _)| !act.pending_renewals.contains(id))
                    .collect();
                act.schedule_renewals(due, renewing as usize, ctx);
            }),
        );
    }

    /// Starts at most as many renewals as the cap leaves room for, each after
    /// a random delay within the jitter window.
    fn schedule_renewals(
        &mut self,
        due: Vec<(String, String)>,
        running: usize,
        ctx: &mut Context<Self>,
    ) {
        let renewal = &self.deps.config.renewal;
        let room = renewal
            .max_concurrent_orders
            .saturating_sub(running + self.pending_renewals.len());
        if due.len() > room {
            tracing::info!(
                due = due.len(),
                room,
                "renewals capped; the rest wait for the next sweep"
            );
        }
        for (id, certificate_id) in due.into_iter().take(room) {
            let delay = jitter(renewal.jitter);
            self.pending_renewals.insert(id.clone());
            ctx.run_later(delay, move |act, _| {
                act.pending_renewals.remove(&id);
                let addr = act.actor(&id);
                actix::spawn(async move {
                    match addr.send(Renew { certificate_id }).await {
                        Ok(Ok(Some(op))) => tracing::debug!(instance_id = %id, operation_id = %op, "renewal running"),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::warn!(instance_id = %id, error = %e, "renewal not started"),
                        Err(e) => tracing::warn!(instance_id = %id, error = %e, "renewal not started"),
                    }
                });
            });
        }
    }
}

/// A random delay in `[0, window]`, so that renewals found due together do
/// not all reach the CA at once.
pub fn jitter(window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=window.as_millis() as u64))
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // At start, then on timers: resume unfinished operations (often
        // enough to take over a dead replica's work soon after its lease
        // lapses), and renew what is due.
        self.resume(ctx);
        self.renew_due(ctx);
        ctx.run_interval(self.deps.config.replica.lease / 2, |act, ctx| {
            act.resume(ctx)
        });
        let interval = self.deps.config.renewal.check_interval;
        ctx.run_interval(interval, |act, ctx| act.renew_due(ctx));
    }
}

/// A message for the InstanceActor of instance `.0`.
pub struct Route<M>(pub String, pub M);

impl<M> Message for Route<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    type Result = Result<M::Result, BrokerError>;
}

impl<M> Handler<Route<M>> for Supervisor
where
    M: Message + Send + 'static,
    M::Result: Send,
    InstanceActor: Handler<M>,
{
    type Result = ResponseFuture<Result<M::Result, BrokerError>>;

    fn handle(&mut self, Route(id, msg): Route<M>, _: &mut Context<Self>) -> Self::Result {
        let addr = self.actor(&id);
        Box::pin(async move { Ok(addr.send(msg).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_window_and_varies() {
        let window = Duration::from_secs(10);
        let delays: Vec<Duration> = (0..50).map(|_| jitter(window)).collect();
        assert!(delays.iter().all(|d| *d <= window));
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jitter gave one value 50 times"
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
