//! Pure types that parse at the edge, so the inside never re-validates.

mod domain_name;
mod ids;
mod parameters;
mod renewal;

pub use domain_name::{DomainName, InvalidDomainName};
pub use ids::{Action, Plan};
pub use parameters::{DomainList, ParameterError, ProvisionParameters};
pub use renewal::renew_at;
