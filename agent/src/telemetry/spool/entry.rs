//! The spool's on-disk format: a segment is `FMQSPOL1` followed by entries,
//! each `[len u32 LE][crc32 u32 LE][postcard body]`; and the scanner that
//! reads a segment back, skipping what is damaged.

use serde::{Deserialize, Serialize};

use crate::telemetry::uplink::Record;

/// CRC-32 (ISO-HDLC, as zlib and Ethernet): a 1 KB table, small in the
/// agent binary, and fast enough for records of a few hundred bytes.
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

pub(super) fn checksum(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

pub(super) const MAGIC: &[u8; 8] = b"FMQSPOL1";
pub(super) const HEADER: u64 = MAGIC.len() as u64;
/// No entry is larger: a longer length field means corruption.
pub(super) const MAX_ENTRY: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Entry {
    Record { id: u64, record: Record },
    Batch { seq: u64, first: u64, last: u64 },
    Ack { seq: u64 },
    Abandon { seq: u64 },
}

pub(super) fn encode(entry: &Entry) -> Vec<u8> {
    // Serializing these plain types into a Vec cannot fail.
    let body = postcard::to_allocvec(entry).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Where a scan of one segment's bytes stopped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ScanEnd {
    /// Bytes up to the end of the last whole entry.
    pub(super) valid: u64,
    /// An incomplete or unreadable entry at the very end.
    pub(super) torn: bool,
    pub(super) corrupt: u64,
}

/// The entry at `at`, if one is whole and intact there: (entry, its length).
fn entry_at(bytes: &[u8], at: usize) -> Option<Result<(Entry, usize), usize>> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_ENTRY {
        return Some(Err(0));
    }
    let body = bytes.get(at + 8..at + 8 + len as usize)?;
    if checksum(body) != crc {
        return Some(Err(8 + len as usize));
    }
    match postcard::from_bytes::<Entry>(body) {
        Ok(e) => Some(Ok((e, 8 + len as usize))),
        // Intact but not understood: skip exactly this entry.
        Err(_) => Some(Err(8 + len as usize)),
    }
}

/// Calls `f(offset, entry)` for every intact entry after the header.
pub(super) fn scan(bytes: &[u8], mut f: impl FnMut(u64, Entry)) -> ScanEnd {
    let mut end = ScanEnd {
        valid: HEADER.min(bytes.len() as u64),
        ..ScanEnd::default()
    };
    let mut at = HEADER as usize;
    while at < bytes.len() {
        match entry_at(bytes, at) {
            Some(Ok((entry, len))) => {
                f(at as u64, entry);
                at += len;
                end.valid = at as u64;
            }
            Some(Err(len)) if len > 0 && at + len == bytes.len() => {
                // The last entry is damaged: a write cut short.
                end.torn = true;
                return end;
            }
            None => {
                end.torn = true;
                return end;
            }
            Some(Err(_)) => {
                // Corrupt in the middle: find the next intact entry.
                end.corrupt += 1;
                match (at + 1..bytes.len()).find(|&p| matches!(entry_at(bytes, p), Some(Ok(_)))) {
                    Some(p) => at = p,
                    None => {
                        end.torn = true;
                        return end;
                    }
                }
            }
        }
    }
    end
}

/// What reading one segment file's bytes found, as the spool reads them
/// at start: for the fuzz target (`fuzz/fuzz_targets/spool.rs`) and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentScan {
    /// Intact entries read.
    pub entries: usize,
    /// Bytes up to the end of the last whole entry.
    pub valid: u64,
    /// The file ends in an incomplete or damaged entry (a write cut short).
    pub torn: bool,
    /// Damaged entries skipped in the middle.
    pub corrupt: u64,
}

/// Scans a segment file's bytes (header included) as recovery does.
/// Never panics, whatever the bytes.
pub fn scan_segment(bytes: &[u8]) -> SegmentScan {
    let mut entries = 0;
    let end = scan(bytes, |_, _| entries += 1);
    SegmentScan {
        entries,
        valid: end.valid,
        torn: end.torn,
        corrupt: end.corrupt,
    }
}
