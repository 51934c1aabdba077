//! The four closed vocabularies of a RouteInput: `env`, `data_label`, `tenant_risk` and `qos_class`.
//!
//! WCP fixes these sets (spec §4.1) and PyHall compares them case-sensitively without trimming, so
//! they are enums here: a value outside the set is rejected when the input is parsed, and the
//! router never sees a string it would have to compare. Each enum also has a dense index so the
//! rules index can address a (env, data_label, tenant_risk, qos_class) cell by arithmetic.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a closed string vocabulary with a dense index, strict parsing and serde in one place.
macro_rules! closed_vocabulary {
    ($(#[$doc:meta])* $name:ident, $field:literal, [$($variant:ident = $text:literal),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The wire spelling of every value, in index order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];
            /// The RouteInput field this vocabulary belongs to.
            pub const FIELD: &'static str = $field;

            /// The wire spelling (exactly what PyHall compares against).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Dense index in `0..ALL.len()`.
            pub fn index(self) -> usize {
                self as usize
            }

            /// Parses the exact, case-sensitive wire spelling.
            pub fn parse(text: &str) -> Result<Self, VocabularyError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(VocabularyError {
                        field: $field,
                        value: text.to_owned(),
                        allowed: Self::NAMES,
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_vocabulary!(
    /// The deployment environment a request claims to run in.
    Env, "env", [Dev = "dev", Stage = "stage", Prod = "prod", Edge = "edge"]
);
closed_vocabulary!(
    /// The sensitivity of the data the request touches.
    DataLabel, "data_label", [Public = "PUBLIC", Internal = "INTERNAL", Restricted = "RESTRICTED"]
);
closed_vocabulary!(
    /// The risk class of the calling tenant.
    TenantRisk, "tenant_risk", [Low = "low", Medium = "medium", High = "high"]
);
closed_vocabulary!(
    /// Quality-of-service class, P0 (critical) to P3 (background).
    QosClass, "qos_class", [P0 = "P0", P1 = "P1", P2 = "P2", P3 = "P3"]
);

impl Env {
    /// prod and edge are the environments where PyHall applies its production-only checks
    /// (shadow rules, the blast floor, the skipped-attestation warning).
    pub fn is_production(self) -> bool {
        matches!(self, Env::Prod | Env::Edge)
    }
}

/// A value outside one of the closed vocabularies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not allowed; expected one of: {}", .allowed.join(", "))]
pub struct VocabularyError {
    /// The field that carried the value.
    pub field: &'static str,
    /// The rejected value.
    pub value: String,
    /// Every accepted spelling.
    pub allowed: &'static [&'static str],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_spellings_only() {
        assert_eq!(Env::parse("prod"), Ok(Env::Prod));
        let err = Env::parse("Prod").unwrap_err();
        assert_eq!(
            err.to_string(),
            "env: \"Prod\" is not allowed; expected one of: dev, stage, prod, edge"
        );
        assert!(DataLabel::parse("public").is_err());
        assert!(QosClass::parse(" P0").is_err());
    }

    #[test]
    fn indices_are_dense() {
        for (i, v) in QosClass::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
            assert_eq!(QosClass::parse(v.as_str()), Ok(*v));
        }
    }
}
