//! Why a run did not happen, with a stable code the dispatch layer turns into a deny.

use std::fmt;

use serde::Serialize;

use super::report::EnvelopeReport;

/// One protection a profile can require (the [`super::Minimums`] fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Landlock,
    NetworkIsolation,
    Seccomp,
    PidNamespace,
    Cgroup,
    UnprivilegedUser,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Landlock => "landlock",
            Feature::NetworkIsolation => "network_isolation",
            Feature::Seccomp => "seccomp",
            Feature::PidNamespace => "pid_namespace",
            Feature::Cgroup => "cgroup",
            Feature::UnprivilegedUser => "unprivileged_user",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run that was refused or could not be carried out. Never a silently weaker run.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The profile requires a protection this host cannot enforce.
    #[error("{feature} is required by the profile but cannot be enforced here: {reason}")]
    RequirementUnmet {
        feature: Feature,
        reason: String,
        hint: String,
    },
    /// The request itself is wrong (paths, limits, names); nothing was started.
    #[error("invalid run request: {field}: {problem}")]
    InvalidRequest { field: String, problem: String },
    /// A declared secret could not be read from the Hall's secrets directory.
    #[error("secret {name:?}: {problem}")]
    Secret { name: String, problem: String },
    /// A stage between fork and exec failed; `stage` names the real culprit.
    #[error("envelope stage {stage} failed: {message}")]
    StageFailed {
        stage: String,
        errno: i32,
        message: String,
        report: Box<EnvelopeReport>,
    },
    /// The Hall could not prepare the run (run directory, pipes, cgroup files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl EnvelopeError {
    /// The stable code for the dispatch layer's deny.
    pub fn code(&self) -> &'static str {
        match self {
            EnvelopeError::RequirementUnmet { .. } => "DENY_ENVELOPE_REQUIREMENT_UNMET",
            EnvelopeError::InvalidRequest { .. } => "DENY_ENVELOPE_INVALID_REQUEST",
            EnvelopeError::Secret { .. } => "DENY_ENVELOPE_SECRET_UNAVAILABLE",
            EnvelopeError::StageFailed { .. } => "DENY_ENVELOPE_STAGE_FAILED",
            EnvelopeError::Io { .. } => "DENY_ENVELOPE_INTERNAL",
        }
    }

    /// How to fix it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            EnvelopeError::RequirementUnmet { hint, .. } => Some(hint.clone()),
            EnvelopeError::Secret { .. } => Some(
                "put the secret in the Hall's secrets directory as <name>, owned by the Hall's \
                 uid with mode 0600"
                    .into(),
            ),
            EnvelopeError::StageFailed { stage, .. } => Some(format!(
                "run `wcp-hall envelope probe` to see what this host can enforce; stage {stage} \
                 is where it broke"
            )),
            _ => None,
        }
    }

    /// The report of a run that failed in a stage (for the evidence receipt).
    pub fn report(&self) -> Option<&EnvelopeReport> {
        match self {
            EnvelopeError::StageFailed { report, .. } => Some(report),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        EnvelopeError::InvalidRequest {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EnvelopeError::Io {
            context: context.into(),
            source,
        }
    }
}
