//! Everything that only runs on the server (feature `ssr`).

pub mod api;
pub mod config;
pub mod guard;
pub mod http;
pub mod service;
pub mod store;
pub mod stream;
pub mod worker;
