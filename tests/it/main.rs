//! The integration tests that need nothing of the test process itself: one binary, one module per
//! area (`cargo test --locked --test it daemon::` runs one), with the shared helpers as sibling
//! modules. They run on parallel threads of one process, so a test here changes no process-wide
//! state (environment, signal dispositions, umask, current directory, rlimits): what needs that
//! happens in a child process (`receipts_crash` re-executes this binary for it). The in-process
//! envelope tests, which do change the process, are the `envelope` binary; the booted container
//! is `systemd_boot`. See "Testing" in ARCHITECTURE.md.

// Shared helpers.
mod attestation_support;
mod hall_support;
mod receipts_common;
mod venv;

// One module per area.
mod attestation_attacks;
mod attestation_cli;
mod attestation_vectors;
mod cli;
mod daemon;
mod demo;
mod docs_links;
mod hostile_input;
mod mcp;
mod oci;
mod otlp;
mod policies;
mod policy_cli;
mod policy_gate;
mod prometheus;
mod receipts;
mod receipts_cli;
mod receipts_crash;
mod receipts_resume;
mod registry_service;
mod routing_vectors;
mod systemd;
mod verify_doc;
mod warm;
mod workers;
