//! The WCP model: closed vocabularies, RouteInput, RouteDecision, deny codes and telemetry events.
//!
//! Pure data and validation; no I/O.

pub mod decision;
pub mod enums;
pub mod input;
pub mod telemetry;

pub use decision::{
    CandidateWorker, DenyCode, DenyReason, Escalation, NO_MATCH, PRE_ROUTING, Preconditions,
    RouteDecision, SkipReason,
};
pub use enums::{DataLabel, Env, QosClass, TenantRisk, VocabularyError};
pub use input::{InputError, InputParseError, RouteInput};
pub use telemetry::TelemetryEvent;
