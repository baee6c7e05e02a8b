//! Pure types that parse at the edge, so the inside never re-validates.

pub mod cdn;
mod domain_name;
mod ids;
mod parameters;
mod renewal;

pub use cdn::{CdnError, CdnSettings};
pub use domain_name::{DomainName, InvalidDomainName};
pub use ids::{Action, Plan};
pub use parameters::{DomainList, ParameterError, ProvisionParameters};
pub use renewal::renew_at;
