//! The HTTP side of the server (feature `ssr`). Every route comes from the access policy
//! table (`policy`) and passes the `gate`; handlers translate HTTP to calls of the service
//! layer (`crate::service`) and back.

pub mod account_api;
pub mod admission;
pub mod api;
pub mod assets;
pub mod cli;
pub mod config;
pub mod dead_letter_api;
pub mod export_api;
pub mod gate;
pub mod headers;
pub mod http;
pub mod memory;
pub mod metrics_api;
pub mod openapi;
pub mod page_bundles;
pub mod policy;
pub mod ratelimit;
pub mod rule_api;
pub mod segment_api;
pub mod stream;
pub mod webhook_api;
