//! Evidence receipts (issue 5): DSSE-signed, hash-chained, Merkle-checkpointed log.
