//! The Supervisor owns `instance id -> InstanceActor`, routes messages to
//! them, spreads them over one arbiter per core, and starts again any that
//! died: everything an InstanceActor needs is in the database.

use std::collections::HashMap;

use actix::prelude::*;

use super::{BrokerError, InstanceActor};
use crate::db::queries;
use crate::deps::Deps;

pub struct Supervisor {
    deps: Deps,
    instances: HashMap<String, Addr<InstanceActor>>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
}

impl Supervisor {
    pub fn new(deps: Deps) -> Supervisor {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Supervisor {
            deps,
            instances: HashMap::new(),
            arbiters: (0..cores).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
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
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Actors of deleted or unknown instances stop themselves; forget them.
        ctx.run_interval(std::time::Duration::from_secs(60), |act, _| {
            act.instances.retain(|_, addr| addr.connected());
        });
        // Resume every instance whose operation had not finished.
        let store = self.deps.store.clone();
        ctx.wait(
            async move {
                store
                    .read(|c| Box::pin(async move { queries::unfinished_instance_ids(c).await }))
                    .await
            }
            .into_actor(self)
            .map(|result, act, _| match result {
                Ok(ids) => {
                    if !ids.is_empty() {
                        tracing::info!(count = ids.len(), "resuming unfinished operations");
                    }
                    for id in ids {
                        act.actor(&id);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list unfinished operations"),
            }),
        );
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
