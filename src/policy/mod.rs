//! The policy gate (issue 6): Cedar behind the PolicyEngine trait, profiles, WCP blast radius.
