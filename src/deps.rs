//! The broker's parts, built once at start-up and shared by handlers, the
//! actors and the pipeline steps.

use std::sync::Arc;

use crate::acme::AcmeClient;
use crate::actors::Store;
use crate::cloud::Cloud;
use crate::config::Config;
use crate::crypto::Cipher;
use crate::dns::{ChallengeRecords, CnameChecker};
use crate::lifecycle::Lifecycle;

#[derive(Clone)]
pub struct Deps {
    pub config: Arc<Config>,
    pub store: Store,
    pub cipher: Cipher,
    pub acme: Arc<AcmeClient>,
    pub dns: Arc<ChallengeRecords>,
    pub cname: Arc<CnameChecker>,
    pub lifecycle: Arc<Lifecycle>,
    /// Present when an AWS plan is configured.
    pub cloud: Option<Arc<Cloud>>,
}
