//! The ELF program header parser: the program interpreter (`PT_INTERP`, the dynamic loader) a
//! 64-bit little-endian executable names, read from the first `ELF_HEAD_BYTES` of the file.
//!
//! # Threat model
//! The bytes come from a file the operator configured (`[envelope] python`) or from a worker
//! package's native `code/bootstrap`, so they are treated as hostile data: every offset and
//! size is checked against the bytes given (no arithmetic overflows, nothing read past the
//! end), the interpreter path must be NUL-terminated, absolute and at most `MAX_PATH_BYTES`,
//! and two `PT_INTERP` headers are refused. Errors are strings for the caller to put after the
//! file's name.
//!
//! Owns parsing only: it must not read files (the callers, `python` and `native`, read the head
//! and resolve the loader it names) and must not run anything.

/// How much of an executable's head is read to find its ELF program interpreter.
pub(crate) const ELF_HEAD_BYTES: usize = 64 << 10;

/// The longest program interpreter path accepted, with its NUL.
const MAX_PATH_BYTES: usize = 4096;

/// The program interpreter (`PT_INTERP`) of a 64-bit little-endian ELF file, from its first
/// bytes; `None` for a static executable. Refuses anything that is not such a file, and
/// headers that point outside `head`.
pub fn elf_interpreter(head: &[u8]) -> Result<Option<String>, String> {
    const PT_INTERP: u32 = 3;
    let not_elf = || {
        "is not an ELF executable (a wrapper script such as a pyenv shim?); name the real \
         interpreter binary"
            .to_owned()
    };
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return Err(not_elf());
    }
    if head[4] != 2 || head[5] != 1 {
        return Err("is not a 64-bit little-endian ELF executable".into());
    }
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_le_bytes(
            head.get(o..o.checked_add(2)?)?.try_into().ok()?,
        ))
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            head.get(o..o.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            head.get(o..o.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    let bad = |what: &str| format!("has a malformed ELF header ({what})");
    let e_type = u16_at(16).ok_or_else(|| bad("type"))?;
    if e_type != 2 && e_type != 3 {
        return Err(format!(
            "is an ELF file of type {e_type}, not an executable"
        ));
    }
    let phoff = u64_at(0x20)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| bad("program header offset"))?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(|| bad("entry size"))?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(|| bad("entry count"))?);
    if phnum > 0 && phentsize < 56 {
        return Err(bad("program header entry size"));
    }
    let mut found = None;
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .filter(|o| o.checked_add(56).is_some_and(|end| end <= head.len()))
            .ok_or_else(|| bad("program headers lie outside the first 64 KiB"))?;
        if u32_at(at) != Some(PT_INTERP) {
            continue;
        }
        if found.is_some() {
            return Err(bad("two program interpreters"));
        }
        let offset = u64_at(at + 8).and_then(|v| usize::try_from(v).ok());
        let size = u64_at(at + 32).and_then(|v| usize::try_from(v).ok());
        let bytes = offset
            .zip(size)
            .filter(|(_, s)| (2..=MAX_PATH_BYTES).contains(s))
            .and_then(|(o, s)| head.get(o..o.checked_add(s)?))
            .ok_or_else(|| bad("program interpreter out of range"))?;
        let Some((0, name)) = bytes.split_last() else {
            return Err(bad("program interpreter not NUL-terminated"));
        };
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| n.starts_with('/') && !n.contains('\0'))
            .ok_or_else(|| bad("program interpreter is not an absolute path"))?;
        found = Some(name.to_owned());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE head with the given program headers `(type, offset, size)` and
    /// `tail` bytes appended at 0x200.
    fn elf(headers: &[(u32, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&3u16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        for (i, (t, off, size)) in headers.iter().enumerate() {
            let at = 64 + i * 56;
            b[at..at + 4].copy_from_slice(&t.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        }
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn the_loader_comes_from_pt_interp() {
        let ld = b"/lib64/ld-linux-x86-64.so.2\0";
        let head = elf(&[(6, 0, 0), (3, 0x200, ld.len() as u64)], ld);
        assert_eq!(
            elf_interpreter(&head).unwrap().as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        // Static: no PT_INTERP.
        assert_eq!(elf_interpreter(&elf(&[(1, 0, 0)], b"")).unwrap(), None);
        // The real interpreter on this machine, when there is one.
        if let Ok(bytes) = std::fs::read("/usr/bin/python3.11") {
            let found = elf_interpreter(&bytes[..ELF_HEAD_BYTES.min(bytes.len())]).unwrap();
            assert!(found.is_some_and(|l| l.contains("ld-linux")));
        }
    }

    #[test]
    fn malformed_elf_heads_are_refused() {
        let refused = |head: &[u8]| elf_interpreter(head).unwrap_err();
        assert!(refused(b"#!/bin/sh\nexec python3 \"$@\"\n").contains("pyenv shim"));
        assert!(refused(b"\x7fELF").contains("not an ELF"));
        let mut h32 = elf(&[], b"");
        h32[4] = 1;
        assert!(refused(&h32).contains("64-bit"));
        let mut obj = elf(&[], b"");
        obj[16] = 1;
        assert!(refused(&obj).contains("type 1"));
        let ld = b"/lib/ld.so\0";
        // Out of range, unterminated, relative, huge, duplicated, headers beyond the head.
        assert!(refused(&elf(&[(3, 0x10_0000, 8)], b"")).contains("out of range"));
        assert!(refused(&elf(&[(3, 0x200, 10)], ld)).contains("NUL-terminated"));
        assert!(refused(&elf(&[(3, 0x200, 4)], b"ld\0\0")).contains("absolute"));
        assert!(refused(&elf(&[(3, 0x200, u64::MAX)], ld)).contains("out of range"));
        assert!(refused(&elf(&[(3, 0x200, 11), (3, 0x200, 11)], ld)).contains("two"));
        let mut far = elf(&[(3, 0x200, 11)], ld);
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(refused(&far).contains("outside"));
        let mut small = elf(&[(3, 0x200, 11)], ld);
        small[0x36..0x38].copy_from_slice(&8u16.to_le_bytes());
        assert!(refused(&small).contains("entry size"));
    }
}
