//! Build information for `wcp_hall_build_info` (src/hall/metrics.rs): the commit the binary is
//! built from, as `WCP_HALL_GIT_COMMIT`. A build outside a git checkout (a source tarball)
//! passes it in the environment (`WCP_HALL_GIT_COMMIT=…`) or reports `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WCP_HALL_GIT_COMMIT");
    let given = std::env::var("WCP_HALL_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = given.or_else(|| {
        // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit) and
        // packed-refs. Only paths that exist: a missing one would rerun this script every build.
        let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.extend(git(&["rev-parse", "--git-path", &branch]));
        }
        watched.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
        for path in watched.iter().filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
        git(&["rev-parse", "HEAD"])
    });
    let commit: String = commit
        .unwrap_or_else(|| "unknown".to_owned())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    println!("cargo:rustc-env=WCP_HALL_GIT_COMMIT={commit}");
}
