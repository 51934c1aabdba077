//! The `wcp-hall` binary: a thin shell over the library's CLI.

fn main() {
    std::process::exit(i32::from(wcp_hall::cli::main()));
}
