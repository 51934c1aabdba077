//! wcp-hall: a WCP (Worker Class Protocol) Hall.
//!
//! The pipeline is visible in the module list: a request is a [`wcp::RouteInput`], routed by
//! [`router`] over the compiled [`rules`] and a [`registry`] snapshot under the [`config`] floors,
//! with the [`policy`] gate and the package hashes of [`attest`], producing a
//! [`wcp::RouteDecision`]. The daemon ([`hall`]) runs an allowed request's verified package
//! inside the [`envelope`] and records it in the [`receipt`] log. [`conformance`] replays
//! PyHall's vectors through the same router. The binary (`src/main.rs`) is a thin [`cli`] over
//! this library. See ARCHITECTURE.md for the map and the invariants.

pub mod attest;
pub mod cli;
pub mod client;
pub mod clock;
pub mod common;
pub mod config;
pub mod conformance;
pub mod crypto;
pub mod envelope;
pub mod hall;
pub mod json;
pub mod mcp;
pub mod policy;
pub mod pyjson;
pub mod receipt;
pub mod registry;
pub mod registry_service;
pub mod router;
pub mod rules;
pub mod snapshot;
pub mod wcp;
