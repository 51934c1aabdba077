//! The privilege envelope against the real kernel, as root: workers run in-process through
//! `wcp_hall::envelope` (`envelope`, `envelope_hostile`) and through the CLI (`envelope_cli`).
//! A binary of its own because these tests change the test process itself: a worker's uid
//! switch leaves it non-dumpable, and `envelope_hostile` opens a descriptor without `O_CLOEXEC`
//! on purpose, which every process spawned meanwhile would inherit. Run one module with
//! `cargo test --locked --test envelope envelope_hostile::`.

mod envelope_support;

mod envelope;
mod envelope_cli;
mod envelope_hostile;
