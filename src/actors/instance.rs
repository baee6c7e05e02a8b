//! One InstanceActor per service instance: it owns the instance's lifecycle,
//! decides what each request means given the current operation, and drives
//! the operation's pipeline step by step.

use actix::prelude::*;
use serde_json::Value;

use super::BrokerError;
use crate::catalog;
use crate::db::models::{
    BindingRow, InstanceRow, OperationRow, instance_state, now, operation_state,
};
use crate::db::queries;
use crate::deps::Deps;
use crate::domain::{Action, DomainList, Plan};
use crate::pipeline::{self, OperationRequest};

/// Requests are handled one at a time, to the end (writes included), so two
/// racing requests for one instance never both see it absent; each starts
/// from the stored state, which another replica may have changed.
macro_rules! atomic_handler {
    ($msg:ty, $out:ty, $method:ident) => {
        impl Handler<$msg> for InstanceActor {
            type Result = AtomicResponse<Self, Result<$out, BrokerError>>;

            fn handle(&mut self, msg: $msg, _: &mut Context<Self>) -> Self::Result {
                AtomicResponse::new(Box::pin(
                    self.reload()
                        .then(move |loaded, act, ctx| match loaded {
                            Ok(()) => act.$method(msg, ctx),
                            Err(e) => done(Err(e)),
                        })
                        .map(|reply, act, ctx| {
                            act.stop_if_idle(ctx);
                            reply
                        }),
                ))
            }
        }
    };
}

atomic_handler!(Provision, ProvisionOutcome, provision);
atomic_handler!(Update, UpdateOutcome, update);
atomic_handler!(Deprovision, String, deprovision);
atomic_handler!(Bind, BindOutcome, bind);
atomic_handler!(Unbind, (), unbind);
atomic_handler!(Renew, Option<String>, renew);
atomic_handler!(Wake, (), wake);

pub struct InstanceActor {
    id: String,
    deps: Deps,
    instance: Option<InstanceRow>,
    /// The latest operation of the instance.
    operation: Option<OperationRow>,
    running: Option<SpawnHandle>,
}

impl InstanceActor {
    pub fn new(id: String, deps: Deps) -> Self {
        InstanceActor {
            id,
            deps,
            instance: None,
            operation: None,
            running: None,
        }
    }

    fn live_instance(&self) -> Option<&InstanceRow> {
        self.instance
            .as_ref()
            .filter(|i| i.state != instance_state::DEPROVISIONED)
    }

    fn running_operation(&self) -> Option<&OperationRow> {
        self.operation.as_ref().filter(|o| o.in_progress())
    }

    /// Runs the next step of the current operation, unless one runs already.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_some() {
            return;
        }
        let (Some(instance), Some(op)) = (self.instance.clone(), self.running_operation().cloned())
        else {
            return;
        };
        if self.deps.lifecycle.draining() {
            return;
        }
        // A wait is a timer, not a running step: shutdown does not wait for it.
        let wait = pipeline::wait_before_next_step(&op);
        if !wait.is_zero() {
            self.running = Some(ctx.run_later(wait, |act, ctx| {
                act.running = None;
                act.drive(ctx);
            }));
            return;
        }
        let deps = self.deps.clone();
        let handle = ctx.spawn(pipeline::advance(deps, instance, op).into_actor(self).map(
            |result, act, ctx| {
                act.running = None;
                match result {
                    Ok(pipeline::Advanced::Progressed(rows)) => {
                        let (instance, op) = *rows;
                        // A request may have started a newer operation while
                        // this step was recorded: keep what it wrote.
                        if act.operation.as_ref().is_some_and(|o| o.id == op.id) {
                            act.instance = Some(instance);
                            act.operation = Some(op);
                        }
                        act.drive(ctx);
                        act.stop_if_idle(ctx);
                    }
                    // Another replica drives the instance; the Supervisor
                    // starts this actor again if that replica's lease lapses.
                    Ok(pipeline::Advanced::NotOurs) => {
                        tracing::info!(instance_id = %act.id, "another replica drives this instance");
                        ctx.stop();
                    }
                    Err(e) => {
                        tracing::error!(instance_id = %act.id, error = %e, "recording progress failed; retrying");
                        ctx.run_later(std::time::Duration::from_secs(2), |act, ctx| {
                            act.drive(ctx)
                        });
                    }
                }
            },
        ));
        self.running = Some(handle);
    }

    /// An actor with no live instance and nothing running holds nothing worth
    /// memory; the Supervisor starts it again if it is ever asked for.
    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_none() && self.live_instance().is_none() {
            ctx.stop();
        }
    }

    /// Stops the running step, e.g. when a deprovision overtakes a provision.
    fn cancel(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.running.take() {
            ctx.cancel_future(handle);
        }
    }

    /// Writes a new operation for an existing instance and starts it.
    fn start(
        &mut self,
        state: &'static str,
        op: OperationRow,
    ) -> ResponseActFuture<Self, Result<String, BrokerError>> {
        let instance_id = self.id.clone();
        let store = self.deps.store.clone();
        let write_op = op.clone();
        Box::pin(
            async move {
                store
                    .write("start_operation", move |c| {
                        Box::pin(async move {
                            queries::start_operation(c, &instance_id, state, &write_op).await
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                result?;
                if let Some(instance) = act.instance.as_mut() {
                    instance.state = state.to_string();
                }
                let id = op.id.clone();
                act.operation = Some(op);
                act.drive(ctx);
                Ok(id)
            }),
        )
    }
}

impl Actor for InstanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Messages wait until the instance is loaded.
        ctx.wait(self.reload().map(|loaded, act, ctx| {
            if loaded.is_err() {
                // The Supervisor starts the actor again when it is next needed.
                return ctx.stop();
            }
            if act.running_operation().is_some() {
                tracing::info!(instance_id = %act.id, "resuming unfinished operation");
            }
            act.drive(ctx);
        }));
    }
}

impl InstanceActor {
    /// Loads the instance and its latest operation from the store.
    fn reload(&mut self) -> impl ActorFuture<Self, Output = Result<(), BrokerError>> + 'static {
        let store = self.deps.store.clone();
        let id = self.id.clone();
        async move {
            store
                .read(move |c| {
                    Box::pin(async move {
                        let instance = queries::instance(c, &id).await?;
                        let op = queries::latest_operation(c, &id).await?;
                        Ok((instance, op))
                    })
                })
                .await
        }
        .into_actor(self)
        .map(|result, act, _| match result {
            Ok((instance, op)) => {
                act.instance = instance;
                act.operation = op;
                Ok(())
            }
            Err(e) => {
                tracing::error!(instance_id = %act.id, error = %e, "cannot load instance");
                Err(e.into())
            }
        })
    }
}

/// The platform's view of an instance, as compared for 409.
#[derive(Clone, Debug)]
pub struct ProvisionRequest {
    pub plan: Plan,
    pub service_id: String,
    pub plan_id: String,
    pub organization_guid: String,
    pub space_guid: String,
    pub context: Option<Value>,
    pub parameters: Value,
    pub domains: DomainList,
}

impl ProvisionRequest {
    fn same_as(&self, row: &InstanceRow) -> bool {
        let stored: Value = serde_json::from_str(&row.parameters).unwrap_or(Value::Null);
        row.service_id == self.service_id
            && row.plan_id == self.plan_id
            && row.organization_guid == self.organization_guid
            && row.space_guid == self.space_guid
            && stored == self.parameters
    }
}

#[derive(Message)]
#[rtype(result = "Result<ProvisionOutcome, BrokerError>")]
pub struct Provision(pub ProvisionRequest);

#[derive(Debug, PartialEq, Eq)]
pub enum ProvisionOutcome {
    Accepted { operation: String },
    AlreadyProvisioned,
}

fn busy(op: &OperationRow) -> BrokerError {
    BrokerError::Busy(format!(
        "Another operation ({}) is in progress for this instance; try again when it has finished.",
        op.kind
    ))
}

impl InstanceActor {
    fn provision(
        &mut self,
        Provision(req): Provision,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<ProvisionOutcome, BrokerError>> {
        let accepted = |id| ProvisionOutcome::Accepted { operation: id };
        let request = OperationRequest {
            domains: req.domains.names().iter().map(|d| d.to_string()).collect(),
            parameters: None,
            keep_certificate: false,
        };
        let op = OperationRow::start(
            &self.id,
            Action::Provision.as_str(),
            pipeline::first_description(req.plan, Action::Provision, false),
            serde_json::to_string(&request).expect("serializes"),
        );
        if let Some(existing) = self.live_instance() {
            if !req.same_as(existing) {
                return fail(BrokerError::Conflict(
                    "An instance with this id already exists with other attributes.".into(),
                ));
            }
            return match (self.running_operation(), existing.state.as_str()) {
                (Some(op), _) if op.kind == Action::Provision.as_str() => {
                    done(Ok(accepted(op.id.clone())))
                }
                (Some(op), instance_state::PROVISIONED) if op.kind == Action::Renew.as_str() => {
                    done(Ok(ProvisionOutcome::AlreadyProvisioned))
                }
                (Some(op), _) => fail(busy(op)),
                (None, instance_state::PROVISIONED) => {
                    done(Ok(ProvisionOutcome::AlreadyProvisioned))
                }
                // A failed provision is tried again by repeating the request.
                (None, instance_state::FAILED) => Box::pin(
                    self.start(instance_state::PROVISIONING, op)
                        .map(move |r, _, _| r.map(accepted)),
                ),
                (None, state) => fail(BrokerError::Busy(format!(
                    "The instance is {state}; it cannot be provisioned again now."
                ))),
            };
        }
        let created = now();
        let row = InstanceRow {
            id: self.id.clone(),
            service_id: req.service_id,
            plan_id: req.plan_id,
            organization_guid: req.organization_guid,
            space_guid: req.space_guid,
            context: req.context.map(|c| c.to_string()),
            parameters: req.parameters.to_string(),
            domains: req.domains.to_json(),
            state: instance_state::PROVISIONING.to_string(),
            current_certificate_id: None,
            created_at: created,
            updated_at: created,
            lease_owner: None,
            lease_expires_at: None,
        };
        let row = pipeline::lease_new_instance(&self.deps, row);
        let store = self.deps.store.clone();
        let (write_row, write_op) = (row.clone(), op.clone());
        let domains: Vec<String> = request.domains.clone();
        Box::pin(
            async move {
                store
                    .write("create_instance", move |c| {
                        Box::pin(async move {
                            let names: Vec<&str> = domains.iter().map(String::as_str).collect();
                            queries::create_instance(c, &write_row, &names, &write_op).await
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| match result? {
                Err(taken) => Err(domains_taken(&taken)),
                Ok(()) => {
                    tracing::info!(instance_id = %act.id, operation_id = %op.id, "provision accepted");
                    let id = op.id.clone();
                    act.instance = Some(row);
                    act.operation = Some(op);
                    act.drive(ctx);
                    Ok(accepted(id))
                }
            }),
        )
    }
}

pub fn domains_taken(domains: &[String]) -> BrokerError {
    BrokerError::Invalid(format!(
        "An external domain service already exists for the following domains: {}",
        domains.join(", ")
    ))
}

fn done<T: 'static>(
    value: Result<T, BrokerError>,
) -> ResponseActFuture<InstanceActor, Result<T, BrokerError>> {
    Box::pin(actix::fut::ready(value))
}

fn fail<T: 'static>(e: BrokerError) -> ResponseActFuture<InstanceActor, Result<T, BrokerError>> {
    done(Err(e))
}

#[derive(Message)]
#[rtype(result = "Result<UpdateOutcome, BrokerError>")]
pub struct Update {
    pub domains: DomainList,
    /// The parameters the instance has once the update succeeds.
    pub parameters: Value,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    Accepted { operation: String },
    Unchanged,
}

impl InstanceActor {
    fn update(
        &mut self,
        update: Update,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<UpdateOutcome, BrokerError>> {
        let Some(instance) = self.live_instance() else {
            return fail(BrokerError::NotFound("The instance does not exist.".into()));
        };
        if let Some(op) = self.running_operation() {
            return fail(busy(op));
        }
        if instance.state != instance_state::PROVISIONED {
            return fail(BrokerError::Invalid(format!(
                "The instance is {}; only a provisioned instance can be updated. \
                 Delete it and create it again.",
                instance.state
            )));
        }
        let plan = catalog::plan_by_id(&instance.plan_id).map_or(Plan::Certificate, |p| p.plan);
        let same_domains =
            DomainList::from_stored(&instance.domains).as_ref() == Some(&update.domains);
        // Only a CDN has settings besides its domains; compared as they
        // come out, so that another spelling of the same is no change.
        let settings = |parameters: &Value| {
            let default_origin = self.deps.config.aws.default_cloudfront_origin.as_ref();
            crate::domain::CdnSettings::parse(parameters.as_object()?, &default_origin?.to_string())
                .ok()
        };
        let same_settings = plan != Plan::DomainWithCdn
            || serde_json::from_str::<Value>(&instance.parameters)
                .ok()
                .and_then(|old| settings(&old))
                .is_some_and(|old| Some(old) == settings(&update.parameters));
        if same_domains && same_settings {
            return done(Ok(UpdateOutcome::Unchanged));
        }
        let request = OperationRequest {
            domains: update
                .domains
                .names()
                .iter()
                .map(|d| d.to_string())
                .collect(),
            parameters: Some(update.parameters),
            keep_certificate: same_domains,
        };
        let op = OperationRow::start(
            &self.id,
            Action::Update.as_str(),
            pipeline::first_description(plan, Action::Update, request.keep_certificate),
            serde_json::to_string(&request).expect("serializes"),
        );
        let store = self.deps.store.clone();
        let instance_id = self.id.clone();
        let write_op = op.clone();
        Box::pin(
            async move {
                store
                    .write("start_update", move |c| {
                        Box::pin(async move {
                            let names: Vec<&str> =
                                request.domains.iter().map(String::as_str).collect();
                            let taken =
                                queries::domains_held_by_others(c, &instance_id, &names).await?;
                            if !taken.is_empty() {
                                return Ok(Err(taken));
                            }
                            // Held from now on, so no other instance takes them
                            // while the certificate is ordered.
                            queries::claim_more_domains(c, &instance_id, &names).await?;
                            queries::start_operation(
                                c,
                                &instance_id,
                                instance_state::PROVISIONED,
                                &write_op,
                            )
                            .await?;
                            Ok(Ok(()))
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| match result? {
                Err(taken) => Err(domains_taken(&taken)),
                Ok(()) => {
                    let id = op.id.clone();
                    act.operation = Some(op);
                    act.drive(ctx);
                    Ok(UpdateOutcome::Accepted { operation: id })
                }
            }),
        )
    }
}

#[derive(Message)]
#[rtype(result = "Result<String, BrokerError>")]
pub struct Deprovision;

impl InstanceActor {
    fn deprovision(
        &mut self,
        _: Deprovision,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<String, BrokerError>> {
        let Some(instance) = self.live_instance() else {
            return fail(BrokerError::Gone);
        };
        let plan = catalog::plan_by_id(&instance.plan_id).map_or(Plan::Certificate, |p| p.plan);
        match self.running_operation() {
            Some(op) if op.kind == Action::Deprovision.as_str() => return done(Ok(op.id.clone())),
            Some(op) if op.kind == Action::Update.as_str() => return fail(busy(op)),
            // A deprovision overtakes an unfinished provision (orphan mitigation).
            Some(_) => self.cancel(ctx),
            None => {}
        }
        let superseded = self.running_operation().map(|o| o.id.clone());
        let op = OperationRow::start(
            &self.id,
            Action::Deprovision.as_str(),
            pipeline::first_description(plan, Action::Deprovision, false),
            "{}".into(),
        );
        tracing::info!(instance_id = %self.id, operation_id = %op.id, "deprovision accepted");
        if let Some(old) = superseded {
            let store = self.deps.store.clone();
            let write_op = op.clone();
            let instance_id = self.id.clone();
            return Box::pin(
                async move {
                    store
                        .write("supersede_provision", move |c| {
                            Box::pin(async move {
                                queries::finish_operation(
                                    c,
                                    &old,
                                    operation_state::FAILED,
                                    "Cancelled by a deprovision.",
                                )
                                .await?;
                                queries::start_operation(
                                    c,
                                    &instance_id,
                                    instance_state::DEPROVISIONING,
                                    &write_op,
                                )
                                .await
                            })
                        })
                        .await
                }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    result?;
                    if let Some(instance) = act.instance.as_mut() {
                        instance.state = instance_state::DEPROVISIONING.to_string();
                    }
                    let id = op.id.clone();
                    act.operation = Some(op);
                    act.drive(ctx);
                    Ok(id)
                }),
            );
        }
        self.start(instance_state::DEPROVISIONING, op)
    }
}

#[derive(Message)]
#[rtype(result = "Result<BindOutcome, BrokerError>")]
pub struct Bind {
    pub binding_id: String,
    pub service_id: String,
    pub plan_id: String,
    pub app_guid: Option<String>,
    pub bind_resource: Option<Value>,
    pub parameters: Value,
}

#[derive(Debug)]
pub enum BindOutcome {
    Created(BindingRow),
    Exists(BindingRow),
}

impl InstanceActor {
    fn bind(
        &mut self,
        bind: Bind,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<BindOutcome, BrokerError>> {
        let Some(instance) = self.live_instance() else {
            return fail(BrokerError::NotFound(
                "The service instance does not exist.".into(),
            ));
        };
        if instance.service_id != bind.service_id || instance.plan_id != bind.plan_id {
            return fail(BrokerError::Invalid(
                "service_id and plan_id must be those of the service instance.".into(),
            ));
        }
        let plan = catalog::plan_by_id(&instance.plan_id);
        if !plan.is_some_and(|p| p.bindable) {
            return fail(BrokerError::Invalid(format!(
                "The '{}' plan is not bindable: only 'certificate' instances hand out their \
                 certificate through a binding.",
                plan.map_or("unknown", |p| p.name)
            )));
        }
        let Some(certificate_id) = instance
            .current_certificate_id
            .clone()
            .filter(|_| instance.state == instance_state::PROVISIONED)
        else {
            return fail(BrokerError::Busy(
                "The certificate is not issued yet; bind again once the instance is provisioned."
                    .into(),
            ));
        };
        let row = BindingRow {
            id: bind.binding_id,
            instance_id: self.id.clone(),
            service_id: bind.service_id,
            plan_id: bind.plan_id,
            app_guid: bind.app_guid,
            bind_resource: bind.bind_resource.map(|v| v.to_string()),
            parameters: bind.parameters.to_string(),
            certificate_id,
            created_at: now(),
        };
        let store = self.deps.store.clone();
        Box::pin(
            async move {
                store
                    .write("bind", move |c| {
                        Box::pin(async move {
                            match queries::binding(c, &row.id).await? {
                                Some(existing) => {
                                    let same = existing.instance_id == row.instance_id
                                        && existing.app_guid == row.app_guid
                                        && existing.bind_resource == row.bind_resource
                                        && existing.parameters == row.parameters;
                                    Ok(if same {
                                        Ok(BindOutcome::Exists(existing))
                                    } else {
                                        Err(())
                                    })
                                }
                                None => {
                                    queries::insert_binding(c, &row).await?;
                                    Ok(Ok(BindOutcome::Created(row)))
                                }
                            }
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, _, _| {
                result?.map_err(|()| {
                    BrokerError::Conflict(
                        "A binding with this id already exists with other attributes.".into(),
                    )
                })
            }),
        )
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Unbind {
    pub binding_id: String,
}

impl InstanceActor {
    fn unbind(
        &mut self,
        unbind: Unbind,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), BrokerError>> {
        let store = self.deps.store.clone();
        let instance_id = self.id.clone();
        Box::pin(
            async move {
                store
                    .write("unbind", move |c| {
                        Box::pin(async move {
                            match queries::binding(c, &unbind.binding_id).await? {
                                Some(b) if b.instance_id == instance_id => {
                                    queries::delete_binding(c, &b.id).await.map(|_| true)
                                }
                                _ => Ok(false),
                            }
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, _, _| match result? {
                true => Ok(()),
                false => Err(BrokerError::Gone),
            }),
        )
    }
}

/// Sent by the Supervisor's renewal sweep to an instance whose certificate
/// is due. Answers the new operation, or `None` when the instance is busy or
/// no longer provisioned (the next sweep looks again).
#[derive(Message)]
#[rtype(result = "Result<Option<String>, BrokerError>")]
pub struct Renew {
    /// The certificate found due: if it is no longer the current one (a
    /// renewal or update replaced it meanwhile), there is nothing to do.
    pub certificate_id: String,
}

impl InstanceActor {
    fn renew(
        &mut self,
        renew: Renew,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Option<String>, BrokerError>> {
        let Some(instance) = self.live_instance() else {
            return done(Ok(None));
        };
        if self.running_operation().is_some()
            || instance.state != instance_state::PROVISIONED
            || instance.current_certificate_id.as_ref() != Some(&renew.certificate_id)
        {
            return done(Ok(None));
        }
        let plan = catalog::plan_by_id(&instance.plan_id).map_or(Plan::Certificate, |p| p.plan);
        let request = OperationRequest {
            domains: DomainList::from_stored(&instance.domains)
                .map(|d| d.names().iter().map(|n| n.to_string()).collect())
                .unwrap_or_default(),
            parameters: None,
            keep_certificate: false,
        };
        let op = OperationRow::start(
            &self.id,
            Action::Renew.as_str(),
            pipeline::first_description(plan, Action::Renew, false),
            serde_json::to_string(&request).expect("serializes"),
        );
        tracing::info!(instance_id = %self.id, operation_id = %op.id, "renewal started");
        Box::pin(
            self.start(instance_state::PROVISIONED, op)
                .map(|result, _, _| result.map(Some)),
        )
    }
}

/// Sent by the Supervisor for an instance with an unfinished operation: the
/// actor reloads (done by every handler) and drives it, unless it already is.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Wake;

impl InstanceActor {
    fn wake(
        &mut self,
        _: Wake,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), BrokerError>> {
        self.drive(ctx);
        done(Ok(()))
    }
}
