//! What a native program needs to start inside the envelope besides its package: the dynamic
//! loader its ELF header names (`PT_INTERP`, resolved through symlinks, granted read+execute),
//! the directory that loader lives in (where the distribution keeps the system libraries it
//! loads: `/usr/lib/x86_64-linux-gnu` on Debian, `/usr/lib64` on Fedora), and the loader's
//! cache `/etc/ld.so.cache`, read-only. A static executable needs none of it.
//!
//! Read from the file, never by running it: the program is the worker's (a signed package's
//! `code/bootstrap`, or the operator's `envelope run --native`) and runs only inside the
//! envelope. Libraries outside the loader's directory (`/usr/local/lib`, an `RPATH`) are not
//! granted; such a program fails to start with the loader's message on its stderr.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::elf::{ELF_HEAD_BYTES, elf_interpreter};
use super::types::RuntimePaths;

/// The runtime paths `program` needs (see the module documentation), or why it cannot run.
pub fn runtime_for(program: &Path) -> Result<RuntimePaths, String> {
    let mut head = Vec::with_capacity(ELF_HEAD_BYTES);
    std::fs::File::open(program)
        .and_then(|f| f.take(ELF_HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", program.display()))?;
    if !head.starts_with(b"\x7fELF") {
        return Err(format!(
            "{} is not an ELF executable: a native program is compiled (a script would start an \
             interpreter the envelope never granted)",
            program.display()
        ));
    }
    let Some(loader) =
        elf_interpreter(&head).map_err(|why| format!("{}: {why}", program.display()))?
    else {
        return Ok(RuntimePaths::default());
    };
    let resolved = std::fs::canonicalize(&loader).map_err(|e| {
        format!(
            "{} names the dynamic loader {loader}, which is not usable on this host: {e}",
            program.display()
        )
    })?;
    Ok(for_loader(
        &resolved,
        Path::new("/etc/ld.so.cache").exists(),
    ))
}

/// The grants for a (resolved) loader: pure, so the layout rules are testable.
pub fn for_loader(loader: &Path, has_cache: bool) -> RuntimePaths {
    let mut read: Vec<PathBuf> = loader.parent().map(Path::to_path_buf).into_iter().collect();
    if has_cache {
        read.push(PathBuf::from("/etc/ld.so.cache"));
    }
    RuntimePaths {
        execute: vec![loader.to_path_buf()],
        read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_directory_holds_the_libraries() {
        let r = for_loader(Path::new("/usr/lib64/ld-linux-x86-64.so.2"), true);
        assert_eq!(
            r.execute,
            vec![PathBuf::from("/usr/lib64/ld-linux-x86-64.so.2")]
        );
        assert_eq!(
            r.read,
            vec![
                PathBuf::from("/usr/lib64"),
                PathBuf::from("/etc/ld.so.cache")
            ]
        );
        assert!(
            for_loader(Path::new("/lib/ld-musl-x86_64.so.1"), false).read
                == vec![PathBuf::from("/lib")]
        );
    }

    #[test]
    fn programs_on_this_host() {
        // A dynamically linked system program: its loader, resolved, is granted.
        let r = runtime_for(Path::new("/bin/true")).unwrap();
        assert_eq!(r.execute.len(), 1);
        assert!(r.execute[0].is_absolute() && r.execute[0].exists(), "{r:?}");
        assert_eq!(r.execute[0], std::fs::canonicalize(&r.execute[0]).unwrap());
        // Not ELF, or missing: refused with the path.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let why = runtime_for(&script).unwrap_err();
        assert!(why.contains("run is not an ELF executable"), "{why}");
        assert!(runtime_for(&dir.path().join("missing")).is_err());
    }
}
