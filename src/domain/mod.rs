//! Pure types that parse at the edge, so the inside never re-validates.

mod domain_name;
mod ids;
mod parameters;

pub use domain_name::{DomainName, InvalidDomainName};
pub use ids::{Action, Plan};
pub use parameters::{DomainList, ParameterError, ProvisionParameters};
