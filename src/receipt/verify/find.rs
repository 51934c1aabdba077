//! Finding one record by seq or receipt id.

use std::path::Path;

use crate::receipt::model::{LogLine, ReceiptPayload, parse_hash_string, receipt_hash};
use crate::receipt::store::{self, Segment};

/// Which record to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Seq(u64),
    ReceiptId(String),
}

impl Selector {
    /// `123` → seq; anything else → receipt id.
    pub fn parse(text: &str) -> Self {
        match text.parse::<u64>() {
            Ok(n) => Selector::Seq(n),
            Err(_) => Selector::ReceiptId(text.to_ascii_lowercase()),
        }
    }
}

/// A record as stored, with the result of its context-free checks.
#[derive(Debug, Clone)]
pub struct FoundRecord {
    pub segment: String,
    pub line_number: u64,
    pub offset: u64,
    pub line: LogLine,
    pub payload_bytes: Vec<u8>,
    pub payload: Result<ReceiptPayload, String>,
    /// Whether the stored `receipt_hash` matches the payload bytes.
    pub hash_ok: bool,
}

/// Finds one record by seq or receipt id. `Ok(None)` if there is none.
pub fn find_record(dir: &Path, which: &Selector) -> std::io::Result<Option<FoundRecord>> {
    let segments = store::list_segments(dir)?;
    // For a seq, only the segment whose range holds it is read.
    let candidates: Vec<&Segment> = match which {
        Selector::Seq(n) => segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= *n)
            .into_iter()
            .collect(),
        Selector::ReceiptId(_) => segments.iter().collect(),
    };
    for seg in candidates {
        let data = store::read_segment(&seg.path)?;
        let (lines, _) = store::split_lines(&data);
        for l in lines {
            let Ok(line) = LogLine::parse(l.bytes) else {
                continue;
            };
            let hit = match which {
                Selector::Seq(n) => line.seq == *n,
                Selector::ReceiptId(_) => true,
            };
            if !hit {
                continue;
            }
            let payload_bytes = line.payload_bytes().unwrap_or_default();
            let payload = ReceiptPayload::decode(&payload_bytes).map_err(|e| e.to_string());
            if let Selector::ReceiptId(id) = which
                && payload.as_ref().map(|p| &p.receipt_id) != Ok(id)
            {
                continue;
            }
            let hash_ok =
                parse_hash_string(&line.receipt_hash) == Some(receipt_hash(&payload_bytes));
            return Ok(Some(FoundRecord {
                segment: seg.name.clone(),
                line_number: l.number,
                offset: l.offset,
                line,
                payload_bytes,
                payload,
                hash_ok,
            }));
        }
    }
    Ok(None)
}
