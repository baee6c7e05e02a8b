//! DNS: the challenge records the broker writes into its own zone, and the
//! check that users delegated `_acme-challenge` to it.

mod cname;
mod records;

pub use cname::CnameChecker;
pub use records::{ChallengeRecords, DnsError};
