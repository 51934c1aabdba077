//! The `wcp-hall` binary: a thin shell over the library's CLI.

/// mimalloc instead of glibc's malloc: the executed path makes many short-lived allocations
/// (JSON values, receipts, the envelope report) on several threads, where glibc's arenas spent
/// ~40 % of the Hall's user-space CPU (BENCHMARKS.md, "The Hall's own cost"). Fork safety is
/// unchanged: the envelope's child never allocates between `clone3` and `execve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The one TLS provider of every HTTP client the Hall builds (registry service, OTLP).
    wcp_hall::common::install_tls_provider();
    std::process::exit(i32::from(wcp_hall::cli::main()));
}
