//! The pure core of Leadscore: the data model, input validation and scoring rules.
//!
//! Nothing in here performs IO or reads the clock; callers pass `now` in. That keeps every
//! rule about what is valid and how many points an event is worth unit-testable, and lets the
//! same types travel to the WASM client through server functions.

pub mod access;
pub mod error;
pub mod intake;
pub mod live;
pub mod model;
pub mod query;
pub mod scoring;
pub mod time;
pub mod upload;
pub mod validation;

pub use model::*;
