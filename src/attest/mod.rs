//! Package attestation (issue 3): awp.v1 tree hash and manifests, awp.v2 DSSE manifests, the
//! namespace trust policy and the verified package store.
