//! The `wcp-hall` binary: a thin shell over the library's CLI.

fn main() {
    // The one TLS provider of every HTTP client the Hall builds (registry service, OTLP).
    wcp_hall::common::install_tls_provider();
    std::process::exit(i32::from(wcp_hall::cli::main()));
}
