//! The log directory on disk: segment names, reading segments into lines, atomic small-file
//! writes. Shared by the writer ([`super::log`]) and the offline verifier ([`super::verify`]).
//!
//! ```text
//! <log dir>/
//!   receipts-00000000000000000000.jsonl   segment: one record per line, named by its first seq
//!   receipts-00000000000000065536.jsonl
//!   checkpoint                            the last checkpoint the Hall saved (C2SP signed note)
//!   resume                                the Hall's signed resume snapshot at that checkpoint
//!   LOCK                                  flock(2) held by the one writer
//!   broken/                               torn tails cut at recovery, kept for forensics
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Segment file name prefix and suffix.
pub const SEGMENT_PREFIX: &str = "receipts-";
pub const SEGMENT_SUFFIX: &str = ".jsonl";
/// The saved checkpoint inside the log directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The resume snapshot (see [`super::resume`]).
pub const RESUME_FILE: &str = "resume";
/// The writer's lock file.
pub const LOCK_FILE: &str = "LOCK";
/// Where torn tails go.
pub const BROKEN_DIR: &str = "broken";
/// A segment larger than this is refused when reading (the writer cuts at 64 MiB by default).
pub const MAX_SEGMENT_READ: u64 = 1 << 30;

/// `receipts-<first seq, 20 digits>.jsonl`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first seq a segment name claims, if it is a segment name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub name: String,
}

/// The segments of a log directory, in seq order. Files that are not segments are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = parse_segment_name(name) {
            out.push(Segment {
                first_seq,
                path: entry.path(),
                name: name.to_owned(),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Reads a whole segment (refusing one over [`MAX_SEGMENT_READ`]).
pub fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_SEGMENT_READ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("segment is {len} bytes; the limit is {MAX_SEGMENT_READ}"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads a segment from byte `offset` to its end (refusing one over [`MAX_SEGMENT_READ`]).
pub fn read_segment_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    use std::io::{Seek as _, SeekFrom};
    if offset == 0 {
        return read_segment(path);
    }
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_SEGMENT_READ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("segment is {len} bytes; the limit is {MAX_SEGMENT_READ}"),
        ));
    }
    if offset > len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("segment is {len} bytes, shorter than offset {offset}"),
        ));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity((len - offset) as usize);
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// The line that ends just before `end` (its newline at `end - 1`), read backwards in small
/// blocks; at most `max` bytes long. `Ok(None)` if the file is shorter than `end`, `end` is 0,
/// or the byte at `end - 1` is not a newline.
pub fn read_line_before(path: &Path, end: u64, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::fs::FileExt as _;
    let f = File::open(path)?;
    if end == 0 || f.metadata()?.len() < end {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, end - 1)?;
    if last[0] != b'\n' {
        return Ok(None);
    }
    let stop = end - 1; // the newline
    let mut start = stop;
    let mut line: Vec<u8> = Vec::new();
    const BLOCK: u64 = 8192;
    while start > 0 {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; (start - from) as usize];
        f.read_exact_at(&mut block, from)?;
        if let Some(nl) = block.iter().rposition(|&b| b == b'\n') {
            block.drain(..=nl);
            block.extend_from_slice(&line);
            line = block;
            break;
        }
        block.extend_from_slice(&line);
        line = block;
        start = from;
        if line.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the line before offset {end} is longer than {max} bytes"),
            ));
        }
    }
    if line.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the line before offset {end} is longer than {max} bytes"),
        ));
    }
    Ok(Some(line))
}

/// A complete line of a segment (newline excluded) and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub offset: u64,
    /// 1-based line number.
    pub number: u64,
    pub bytes: &'a [u8],
}

/// Splits segment bytes into complete lines and the unterminated tail (empty if the segment
/// ends with a newline).
pub fn split_lines(data: &[u8]) -> (Vec<Line<'_>>, &[u8]) {
    let mut lines = Vec::new();
    let mut start = 0usize;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            lines.push(Line {
                offset: start as u64,
                number: lines.len() as u64 + 1,
                bytes: &data[start..i],
            });
            start = i + 1;
        }
    }
    (lines, &data[start..])
}

/// `fsync(2)` on a directory, so entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same directory,
/// `fsync`, `rename`, `fsync` of the directory. A crash leaves the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(&dir)
}

/// Reads a small text file (at most `max` bytes); `Ok(None)` if it does not exist.
pub fn read_small(path: &Path, max: u64) -> io::Result<Option<String>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    f.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_seq() {
        assert_eq!(segment_name(7), "receipts-00000000000000000007.jsonl");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("receipts-7.jsonl"), None);
        assert_eq!(
            parse_segment_name("receipts-0000000000000000000x.jsonl"),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        for s in [100, 3, 20] {
            fs::write(dir.path().join(segment_name(s)), b"").unwrap();
        }
        fs::write(dir.path().join("checkpoint"), b"").unwrap();
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(
            segs.iter().map(|s| s.first_seq).collect::<Vec<_>>(),
            [3, 20, 100]
        );
    }

    #[test]
    fn lines_and_torn_tails_are_split_apart() {
        let (lines, tail) = split_lines(b"a\nbc\n\ntorn");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].bytes, b"bc");
        assert_eq!(lines[1].offset, 2);
        assert_eq!(lines[2].number, 3);
        assert_eq!(lines[2].bytes, b"");
        assert_eq!(tail, b"torn");
        let (lines, tail) = split_lines(b"");
        assert!(lines.is_empty() && tail.is_empty());
    }

    #[test]
    fn the_line_before_an_offset_is_read_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seg");
        let long = "x".repeat(20_000);
        fs::write(&p, format!("a\n{long}\nbc\ntorn")).unwrap();
        assert_eq!(read_line_before(&p, 2, 100).unwrap(), Some(b"a".to_vec()));
        let end = 2 + long.len() as u64 + 1;
        assert_eq!(
            read_line_before(&p, end, 30_000).unwrap(),
            Some(long.as_bytes().to_vec())
        );
        assert!(read_line_before(&p, end, 100).is_err());
        assert_eq!(
            read_line_before(&p, end + 3, 100).unwrap(),
            Some(b"bc".to_vec())
        );
        // Not at a line end, past the end, at 0.
        assert_eq!(read_line_before(&p, 3, 100).unwrap(), None);
        assert_eq!(read_line_before(&p, 1 << 20, 100).unwrap(), None);
        assert_eq!(read_line_before(&p, 0, 100).unwrap(), None);
        assert_eq!(read_segment_from(&p, end).unwrap(), b"bc\ntorn");
        assert!(read_segment_from(&p, 1 << 20).is_err());
    }

    #[test]
    fn atomic_writes_replace_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(read_small(&p, 10).unwrap().as_deref(), Some("two"));
        assert!(read_small(&p, 2).is_err());
        assert_eq!(read_small(&dir.path().join("none"), 2).unwrap(), None);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
