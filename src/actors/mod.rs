//! The actor system: a Supervisor that owns one InstanceActor per service
//! instance, and the StoreActor through which every write goes.

pub mod instance;
pub mod store;
pub mod supervisor;

pub use instance::{
    Bind, BindOutcome, Deprovision, InstanceActor, Provision, ProvisionOutcome, Renew, Unbind,
    Update, UpdateOutcome, Wake,
};
pub use store::{Store, StoreActor};
pub use supervisor::{Route, Supervisor};

use crate::db::DbError;

/// What an instance's owner answers when it refuses or fails a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The request is wrong: a person must change it.
    #[error("{0}")]
    Invalid(String),
    /// The id exists with other attributes.
    #[error("{0}")]
    Conflict(String),
    /// Another operation of this instance is running.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    /// Nothing is known under this id.
    #[error("gone")]
    Gone,
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for BrokerError {
    fn from(e: DbError) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            // Another replica won a race for the same instance.
            DbError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                BrokerError::Busy(
                    "Another request for this instance is being handled; try again shortly.".into(),
                )
            }
            e => BrokerError::Internal(e.to_string()),
        }
    }
}

impl From<actix::MailboxError> for BrokerError {
    fn from(e: actix::MailboxError) -> Self {
        BrokerError::Internal(format!("instance actor unavailable: {e}"))
    }
}
