//! Integration tests against the real Pebble, BIND, PostgreSQL and SQLite
//! that `./dev test` starts.

mod bad_input;
mod crash;
mod helpers;
mod lifecycle;
mod osb;
mod process;
mod renewal;
mod replicas;
