//! Integration tests against the real Pebble, BIND, PostgreSQL, SQLite and
//! moto that `./dev test` starts.

mod aws;
mod bad_input;
mod crash;
mod edge;
mod helpers;
mod lifecycle;
mod osb;
mod process;
mod rate_limit;
mod renewal;
mod replicas;
mod store;
