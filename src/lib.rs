//! domain-broker: an Open Service Broker for custom domains and ACME certificates.

pub mod acme;
pub mod actors;
pub mod catalog;
pub mod cloud;
pub mod config;
pub mod crypto;
pub mod db;
pub mod deps;
pub mod dns;
pub mod domain;
pub mod lifecycle;
pub mod osb;
pub mod pipeline;
pub mod startup;
pub mod telemetry;
