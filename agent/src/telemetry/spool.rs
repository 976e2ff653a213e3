//! The agent's disk spool: every record the agent accepts is written here
//! before it counts as accepted, and leaves only once the hub has acked the
//! batch that carried it.
//!
//! On disk the spool is a directory of append-only segment files named by
//! the id of their first record (`00000000000000000001.seg`). A segment is
//! `FMQSPOL1` followed by entries, each `[len u32 LE][crc32 u32 LE][postcard
//! body]`. Entries are records (with an id, counting up by one), batches
//! (which record ids a batch sequence number carries), acks and abandons.
//! Only the newest segment is written; older ones are deleted whole when
//! every record in them is acked, or dropped whole when the spool is full
//! and the policy is to drop the oldest.
//!
//! Because the batch entry is written before the batch is sent, a batch is
//! rebuilt after a crash with the same sequence number and the same records,
//! and the hub's (device, seq) dedup makes the resend harmless.
//!
//! At start every segment is read and checked: a torn tail (a crash in the
//! middle of a write) is cut off, a corrupt entry is skipped by searching
//! for the next entry whose checksum holds. Both are counted, neither stops
//! the agent. Durability: entries reach the page cache at once (a killed
//! process loses nothing) and the disk at the next fsync, which happens on
//! an interval or, with `fsync = "always"`, before a record counts as
//! accepted and before a batch is sent.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::telemetry::uplink::Record;

/// CRC-32 (ISO-HDLC, as zlib and Ethernet): a 1 KB table, small in the
/// agent binary, and fast enough for records of a few hundred bytes.
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

fn checksum(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

const MAGIC: &[u8; 8] = b"FMQSPOL1";
const HEADER: u64 = MAGIC.len() as u64;
/// No entry is larger: a longer length field means corruption.
const MAX_ENTRY: u32 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry {
    Record { id: u64, record: Record },
    Batch { seq: u64, first: u64, last: u64 },
    Ack { seq: u64 },
    Abandon { seq: u64 },
}

/// What to do with a new record when the spool is at its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Delete the oldest segment, whatever it holds, to make room.
    DropOldest,
    /// Keep what is spooled and refuse the new record.
    RefuseNew,
}

/// When the spool asks the kernel to put its writes on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// At most this long after a write.
    Interval(Duration),
    /// Before a record counts as accepted and before a batch is sent.
    Always,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub policy: FullPolicy,
    pub fsync: Fsync,
}

/// Counters shown in the agent's status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Records refused because the spool was full (policy refuse_new).
    pub refused: u64,
    /// Records dropped with the oldest segment (policy drop_oldest).
    pub dropped: u64,
    /// Torn tails cut off at start.
    pub torn_tails: u64,
    /// Corrupt entries skipped at start or while reading.
    pub corrupt_entries: u64,
    /// Records of unacked batches that were missing at start.
    pub lost_records: u64,
}

/// A position in the spool: a segment (by its first id) and a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    first_id: u64,
    path: PathBuf,
    bytes: u64,
}

/// A batch that was sent and not acked before the agent stopped.
#[derive(Debug, PartialEq)]
pub struct Unacked {
    pub seq: u64,
    pub first: u64,
    pub last: u64,
    pub records: Vec<Record>,
}

/// What `open` found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub unacked: Vec<Unacked>,
    pub unpacked: u64,
    pub notes: Vec<String>,
}

/// The spool refused a record.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the spool is full ({bytes} of {max} bytes) and the policy is refuse_new")]
    Full { bytes: u64, max: u64 },
    #[error("writing the spool: {0}")]
    Io(#[from] io::Error),
}

/// Records accepted, and what had to go to make room for them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Ids given to the records, in order.
    pub first_id: u64,
    /// Every record with an id below this was dropped (drop_oldest): the
    /// caller abandons its in-flight batches below it.
    pub dropped_below: Option<u64>,
}

pub struct Spool {
    cfg: SpoolConfig,
    segments: Vec<Segment>,
    file: File,
    next_id: u64,
    /// The next record not yet in a batch.
    cursor: Pos,
    /// Records after the cursor.
    unpacked: u64,
    /// The highest record id in a batch (or dropped).
    packed_upto: u64,
    total_bytes: u64,
    unsynced: bool,
    last_sync: Instant,
    full_episode: bool,
    pub counters: SpoolCounters,
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn encode(entry: &Entry) -> Vec<u8> {
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
struct ScanEnd {
    /// Bytes up to the end of the last whole entry.
    valid: u64,
    /// An incomplete or unreadable entry at the very end.
    torn: bool,
    corrupt: u64,
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
fn scan(bytes: &[u8], mut f: impl FnMut(u64, Entry)) -> ScanEnd {
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

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir` and reads it back: batches
    /// sent but not acked, and how many records wait to be packed.
    pub fn open(cfg: SpoolConfig, now: Instant) -> io::Result<(Spool, Recovery)> {
        fs::create_dir_all(&cfg.dir).map_err(|e| with_path(&cfg.dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(|e| with_path(&cfg.dir, e))? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                names.push((id, path));
            }
        }
        names.sort();

        let mut recovery = Recovery::default();
        let mut counters = SpoolCounters::default();
        let mut segments = Vec::new();
        let mut batches: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut done: HashSet<u64> = HashSet::new();
        let mut max_id = 0u64;
        let last = names.len().saturating_sub(1);
        for (i, (first_id, path)) in names.into_iter().enumerate() {
            let mut bytes = fs::read(&path).map_err(|e| with_path(&path, e))?;
            if !bytes.starts_with(MAGIC) {
                recovery.notes.push(format!(
                    "{} is not a spool segment (bad header); moved aside as .bad",
                    path.display()
                ));
                counters.corrupt_entries += 1;
                fs::rename(&path, path.with_extension("bad")).map_err(|e| with_path(&path, e))?;
                continue;
            }
            let end = scan(&bytes, |_, entry| match entry {
                Entry::Record { id, .. } => max_id = max_id.max(id),
                Entry::Batch { seq, first, last } => {
                    batches.insert(seq, (first, last));
                }
                Entry::Ack { seq } | Entry::Abandon { seq } => {
                    done.insert(seq);
                }
            });
            counters.corrupt_entries += end.corrupt;
            if end.corrupt > 0 {
                recovery.notes.push(format!(
                    "{}: skipped {} corrupt entries",
                    path.display(),
                    end.corrupt
                ));
            }
            if end.torn {
                counters.torn_tails += 1;
                recovery.notes.push(format!(
                    "{}: cut off a torn tail of {} bytes (a write interrupted by a crash)",
                    path.display(),
                    bytes.len() as u64 - end.valid
                ));
                if i == last {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| with_path(&path, e))?;
                    f.set_len(end.valid).map_err(|e| with_path(&path, e))?;
                    f.sync_all().map_err(|e| with_path(&path, e))?;
                }
                bytes.truncate(end.valid as usize);
            }
            segments.push(Segment {
                first_id,
                path,
                bytes: bytes.len() as u64,
            });
        }

        // Records up to the highest batched id are packed; the rest wait.
        let packed_upto = batches.values().map(|&(_, l)| l).max().unwrap_or(0);
        let live: BTreeMap<u64, (u64, u64)> = batches
            .into_iter()
            .filter(|(seq, _)| !done.contains(seq))
            .collect();
        let mut live_records: BTreeMap<u64, Record> = BTreeMap::new();
        let mut cursor = None;
        let mut unpacked = 0u64;
        for seg in &segments {
            let bytes = fs::read(&seg.path).map_err(|e| with_path(&seg.path, e))?;
            scan(
                &bytes[..(seg.bytes as usize).min(bytes.len())],
                |at, entry| {
                    if let Entry::Record { id, record } = entry {
                        if id > packed_upto {
                            unpacked += 1;
                            cursor.get_or_insert(Pos {
                                segment: seg.first_id,
                                offset: at,
                            });
                        } else if live.values().any(|&(f, l)| (f..=l).contains(&id)) {
                            live_records.insert(id, record);
                        }
                    }
                },
            );
        }
        for (seq, (first, last)) in live {
            let records: Vec<Record> = (first..=last)
                .filter_map(|id| live_records.remove(&id))
                .collect();
            let missing = (last - first + 1).saturating_sub(records.len() as u64);
            if missing > 0 {
                counters.lost_records += missing;
                recovery.notes.push(format!(
                    "batch {seq}: {missing} of its records were lost to corruption"
                ));
            }
            recovery.unacked.push(Unacked {
                seq,
                first,
                last,
                records,
            });
        }
        recovery.unpacked = unpacked;

        let next_id = max_id
            .max(packed_upto)
            .max(segments.last().map_or(0, |s| s.first_id.saturating_sub(1)))
            + 1;
        if segments.is_empty() {
            segments.push(Self::create_segment(&cfg.dir, next_id)?);
        }
        let active = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let file = OpenOptions::new()
            .append(true)
            .open(&active)
            .map_err(|e| with_path(&active, e))?;
        let end = segments.last().map_or(HEADER, |s| s.bytes);
        let cursor = cursor.unwrap_or(Pos {
            segment: segments.last().map_or(next_id, |s| s.first_id),
            offset: end,
        });
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let spool = Spool {
            cfg,
            segments,
            file,
            next_id,
            cursor,
            unpacked,
            packed_upto,
            total_bytes,
            unsynced: false,
            last_sync: now,
            full_episode: false,
            counters,
        };
        Ok((spool, recovery))
    }

    fn create_segment(dir: &Path, first_id: u64) -> io::Result<Segment> {
        let path = dir.join(segment_name(first_id));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        f.write_all(MAGIC).map_err(|e| with_path(&path, e))?;
        f.sync_all().map_err(|e| with_path(&path, e))?;
        if let Ok(d) = File::open(dir) {
            // Make the new name durable; not every file system allows this.
            let _ = d.sync_all();
        }
        Ok(Segment {
            first_id,
            path,
            bytes: HEADER,
        })
    }

    fn active(&self) -> &Segment {
        // There is always at least one segment: open creates one, and
        // dropping the oldest rotates first when only one is left.
        &self.segments[self.segments.len() - 1]
    }

    /// Seals the active segment and starts one whose first record will be
    /// `next_id`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let seg = Self::create_segment(&self.cfg.dir, self.next_id)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&seg.path)
            .map_err(|e| with_path(&seg.path, e))?;
        if self.cursor.segment == self.active().first_id && self.unpacked == 0 {
            self.cursor = Pos {
                segment: seg.first_id,
                offset: HEADER,
            };
        }
        self.total_bytes += seg.bytes;
        self.segments.push(seg);
        self.unsynced = false;
        Ok(())
    }

    /// Writes encoded entries to the active segment, all or nothing.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let before = self.active().bytes;
        if let Err(e) = self.file.write_all(bytes) {
            // Cut off whatever part of it reached the file.
            let _ = self.file.set_len(before);
            return Err(e);
        }
        let n = bytes.len() as u64;
        let last = self.segments.len() - 1;
        self.segments[last].bytes += n;
        self.total_bytes += n;
        self.unsynced = true;
        Ok(())
    }

    /// Makes room for `need` bytes by the policy. Returns the id below
    /// which records were dropped, if any were.
    fn make_room(&mut self, need: u64) -> Result<Option<u64>, AppendError> {
        let full = |s: &Self| AppendError::Full {
            bytes: s.total_bytes,
            max: s.cfg.max_bytes,
        };
        if self.total_bytes + need <= self.cfg.max_bytes {
            return Ok(None);
        }
        if self.cfg.policy == FullPolicy::RefuseNew || need + HEADER > self.cfg.max_bytes {
            return Err(full(self));
        }
        let mut below = None;
        while self.total_bytes + need > self.cfg.max_bytes {
            if self.segments.len() == 1 {
                if self.active().bytes == HEADER {
                    return Err(full(self));
                }
                self.rotate()?;
            }
            below = Some(self.drop_oldest()?);
        }
        Ok(below)
    }

    /// Deletes the oldest segment; returns the first id that survives.
    fn drop_oldest(&mut self) -> io::Result<u64> {
        let seg = self.segments.remove(0);
        let below = self.segments[0].first_id;
        if self.cursor.segment == seg.first_id {
            let lost = self.count_records_from(self.cursor, seg.bytes)?;
            self.unpacked -= lost;
            self.counters.dropped += lost;
            self.cursor = Pos {
                segment: below,
                offset: HEADER,
            };
        }
        self.packed_upto = self.packed_upto.max(below - 1);
        self.total_bytes -= seg.bytes;
        fs::remove_file(&seg.path).map_err(|e| with_path(&seg.path, e))?;
        Ok(below)
    }

    fn count_records_from(&self, pos: Pos, end: u64) -> io::Result<u64> {
        let path = self.cfg.dir.join(segment_name(pos.segment));
        let bytes = fs::read(&path).map_err(|e| with_path(&path, e))?;
        let mut n = 0;
        let start = (pos.offset as usize).min(bytes.len());
        let mut region = MAGIC.to_vec();
        region.extend_from_slice(&bytes[start..(end as usize).min(bytes.len())]);
        scan(&region, |_, e| {
            if matches!(e, Entry::Record { .. }) {
                n += 1;
            }
        });
        Ok(n)
    }

    /// Accepts records: on disk (and with `fsync = "always"`, synced) when
    /// this returns Ok. When full, the policy decides; a refusal is counted.
    pub fn append(&mut self, records: &[Record], now: Instant) -> Result<Appended, AppendError> {
        let first_id = self.next_id;
        let mut bytes = Vec::new();
        for (i, record) in records.iter().enumerate() {
            bytes.extend(encode(&Entry::Record {
                id: first_id + i as u64,
                record: record.clone(),
            }));
        }
        let need = bytes.len() as u64;
        let result = self.make_room(need).and_then(|below| {
            if self.active().bytes >= self.cfg.segment_bytes {
                self.rotate()?;
            }
            match self.write(&bytes) {
                Ok(()) => Ok(below),
                // The disk itself is full: the policy applies as at the cap.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    if self.cfg.policy == FullPolicy::DropOldest && self.segments.len() > 1 {
                        let below = self.drop_oldest()?;
                        self.write(&bytes)?;
                        Ok(Some(below))
                    } else {
                        Err(AppendError::Full {
                            bytes: self.total_bytes,
                            max: self.total_bytes,
                        })
                    }
                }
                Err(e) => Err(e.into()),
            }
        });
        match result {
            Ok(dropped_below) => {
                self.next_id += records.len() as u64;
                self.unpacked += records.len() as u64;
                if self.cfg.fsync == Fsync::Always {
                    self.sync(now)?;
                }
                if dropped_below.is_none() && self.full_episode {
                    self.full_episode = false;
                }
                Ok(Appended {
                    first_id,
                    dropped_below,
                })
            }
            Err(AppendError::Full { bytes, max }) => {
                self.counters.refused += records.len() as u64;
                Err(AppendError::Full { bytes, max })
            }
            Err(e) => Err(e),
        }
    }

    /// True once per episode of the spool being full: the caller logs then.
    pub fn full_episode_started(&mut self) -> bool {
        !std::mem::replace(&mut self.full_episode, true)
    }

    /// Up to `max` records not yet in a batch, oldest first, each with the
    /// position just after it (to pass to `packed`).
    pub fn peek(&mut self, max: usize) -> io::Result<Vec<(u64, Record, Pos)>> {
        let mut out = Vec::new();
        let mut pos = self.cursor;
        while out.len() < max {
            let Some(seg) = self.segments.iter().find(|s| s.first_id == pos.segment) else {
                break;
            };
            let (seg_first, seg_bytes) = (seg.first_id, seg.bytes);
            let mut r = BufReader::new(File::open(&seg.path).map_err(|e| with_path(&seg.path, e))?);
            r.seek(SeekFrom::Start(pos.offset))?;
            let mut offset = pos.offset;
            while out.len() < max && offset + 8 <= seg_bytes {
                let mut head = [0u8; 8];
                r.read_exact(&mut head)?;
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
                if len > MAX_ENTRY || offset + 8 + u64::from(len) > seg_bytes {
                    // Only a damaged segment gets here; skip its remainder.
                    self.counters.corrupt_entries += 1;
                    offset = seg_bytes;
                    break;
                }
                let mut body = vec![0u8; len as usize];
                r.read_exact(&mut body)?;
                offset += 8 + u64::from(len);
                let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                if checksum(&body) != crc {
                    self.counters.corrupt_entries += 1;
                    continue;
                }
                if let Ok(Entry::Record { id, record }) = postcard::from_bytes(&body) {
                    out.push((
                        id,
                        record,
                        Pos {
                            segment: seg_first,
                            offset,
                        },
                    ));
                }
            }
            pos = Pos {
                segment: seg_first,
                offset,
            };
            if offset >= seg_bytes {
                match self.segments.iter().find(|s| s.first_id > seg_first) {
                    Some(next) => {
                        pos = Pos {
                            segment: next.first_id,
                            offset: HEADER,
                        }
                    }
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Records `first..=last_id` (ending at `after`, `used` of them) went
    /// into batch `seq`, or into none when the protocol refused them all.
    /// The batch entry is written (and with `fsync = "always"` synced)
    /// before the batch may be sent.
    pub fn packed(
        &mut self,
        seq: Option<u64>,
        first: u64,
        last_id: u64,
        used: u64,
        after: Pos,
        now: Instant,
    ) -> io::Result<()> {
        if let Some(seq) = seq {
            self.write(&encode(&Entry::Batch {
                seq,
                first,
                last: last_id,
            }))?;
        }
        self.cursor = after;
        self.unpacked = self.unpacked.saturating_sub(used);
        self.packed_upto = self.packed_upto.max(last_id);
        if self.cfg.fsync == Fsync::Always {
            self.sync(now)?;
        }
        Ok(())
    }

    /// The hub acked `seq`. Not synced: losing an ack only means a resend,
    /// which the hub recognises.
    pub fn acked(&mut self, seq: u64) -> io::Result<()> {
        self.write(&encode(&Entry::Ack { seq }))
    }

    /// Batch `seq` will not be sent again (its records were dropped).
    pub fn abandoned(&mut self, seq: u64) -> io::Result<()> {
        self.write(&encode(&Entry::Abandon { seq }))
    }

    /// Deletes sealed segments all of whose records are below `low_water`
    /// (the oldest record still unacked, if any is in flight).
    pub fn release(&mut self, in_flight_low: Option<u64>) -> io::Result<()> {
        let low = in_flight_low.unwrap_or(u64::MAX).min(self.packed_upto + 1);
        while self.segments.len() > 1 && self.segments[1].first_id <= low {
            let seg = self.segments.remove(0);
            self.total_bytes -= seg.bytes;
            if self.cursor.segment == seg.first_id {
                // Only entries other than records were left after it.
                self.cursor = Pos {
                    segment: self.segments[0].first_id,
                    offset: HEADER,
                };
            }
            fs::remove_file(&seg.path).map_err(|e| with_path(&seg.path, e))?;
        }
        Ok(())
    }

    /// Syncs if anything is unsynced and the interval has passed.
    pub fn sync_if_due(&mut self, now: Instant) -> io::Result<()> {
        match self.cfg.fsync {
            Fsync::Interval(every) if self.unsynced && now >= self.last_sync + every => {
                self.sync(now)
            }
            _ => Ok(()),
        }
    }

    /// When the next interval sync is due, if one is waiting.
    pub fn next_sync(&self) -> Option<Instant> {
        match self.cfg.fsync {
            Fsync::Interval(every) if self.unsynced => Some(self.last_sync + every),
            _ => None,
        }
    }

    pub fn sync(&mut self, now: Instant) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        self.last_sync = now;
        Ok(())
    }

    pub fn unpacked(&self) -> u64 {
        self.unpacked
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    #[cfg(test)]
    fn segments(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::Value;

    fn config(dir: &Path, max_bytes: u64, policy: FullPolicy) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: 4096,
            policy,
            fsync: Fsync::Interval(Duration::from_secs(1)),
        }
    }

    fn sample(i: i64) -> Record {
        Record::Sample {
            name: "test.n".into(),
            ts_ms: 1_000 + i as u64,
            value: Value::Int(i),
        }
    }

    fn value(r: &Record) -> i64 {
        match r {
            Record::Sample {
                value: Value::Int(v),
                ..
            } => *v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Packs up to `n` records as batch `seq`; returns their values.
    fn pack(s: &mut Spool, seq: u64, n: usize) -> Vec<i64> {
        let peeked = s.peek(n).unwrap();
        let (first, last, after) = (
            peeked[0].0,
            peeked[peeked.len() - 1].0,
            peeked[peeked.len() - 1].2,
        );
        s.packed(
            Some(seq),
            first,
            last,
            peeked.len() as u64,
            after,
            Instant::now(),
        )
        .unwrap();
        peeked.iter().map(|(_, r, _)| value(r)).collect()
    }

    /// A spool holding samples 0..5 in one segment; returns its path.
    fn five_samples(cfg: &SpoolConfig, now: Instant) -> PathBuf {
        let (mut s, _) = Spool::open(cfg.clone(), now).unwrap();
        for i in 0..5 {
            s.append(&[sample(i)], now).unwrap();
        }
        segment_files(&cfg.dir).remove(0)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_checksum_is_crc32_iso_hdlc_so_older_spools_still_read() {
        // The catalogue's check value: what every earlier agent wrote.
        assert_eq!(checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn unacked_batches_and_waiting_records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut s, rec) =
            Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
        assert!(rec.unacked.is_empty() && rec.unpacked == 0);
        for i in 0..10 {
            s.append(&[sample(i)], now).unwrap();
        }
        assert_eq!(pack(&mut s, 7, 4), vec![0, 1, 2, 3]);
        assert_eq!(pack(&mut s, 8, 3), vec![4, 5, 6]);
        s.acked(7).unwrap();
        drop(s); // as if killed: nothing is flushed at the end

        let (mut s, rec) =
            Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
        assert_eq!(rec.unacked.len(), 1, "batch 7 was acked, 8 was not");
        let b = &rec.unacked[0];
        assert_eq!(b.seq, 8, "resent under its own sequence number");
        assert_eq!(
            b.records.iter().map(value).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert_eq!(rec.unpacked, 3);
        assert_eq!(pack(&mut s, 9, 100), vec![7, 8, 9]);
        s.append(&[sample(10)], now).unwrap();
        assert_eq!(
            pack(&mut s, 10, 100),
            vec![10],
            "ids continue after a restart"
        );
        assert_eq!(s.counters, SpoolCounters::default());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted_and_writing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let cfg = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
        let seg = &five_samples(&cfg, now);
        let len = fs::metadata(seg).unwrap().len();
        // A crash in the middle of writing the last record.
        OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        let (mut s, rec) = Spool::open(cfg.clone(), now).unwrap();
        assert_eq!(s.counters.torn_tails, 1);
        assert_eq!(rec.unpacked, 4, "the torn record was never whole");
        assert!(
            rec.notes.iter().any(|n| n.contains("torn tail")),
            "{:?}",
            rec.notes
        );
        s.append(&[sample(99)], now).unwrap();
        assert_eq!(pack(&mut s, 1, 100), vec![0, 1, 2, 3, 99]);
        drop(s);
        let (_, rec) = Spool::open(cfg, now).unwrap();
        assert_eq!(rec.unacked[0].records.len(), 5, "clean after the cut");
    }

    #[test]
    fn a_corrupt_entry_in_the_middle_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let cfg = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
        let seg = &five_samples(&cfg, now);
        let mut bytes = fs::read(seg).unwrap();
        let entry = (bytes.len() - HEADER as usize) / 5;
        // Flip a bit in the body of the third record.
        bytes[HEADER as usize + 2 * entry + 10] ^= 0x40;
        fs::write(seg, &bytes).unwrap();

        let (mut s, rec) = Spool::open(cfg, now).unwrap();
        assert_eq!(s.counters.corrupt_entries, 1);
        assert_eq!(rec.unpacked, 4);
        assert_eq!(pack(&mut s, 1, 100), vec![0, 1, 3, 4]);
    }

    #[test]
    fn a_full_spool_drops_whole_oldest_segments_and_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let max = 5 * 4096;
        let (mut s, _) = Spool::open(config(dir.path(), max, FullPolicy::DropOldest), now).unwrap();
        let mut lowest_kept = 0;
        for i in 0..5_000 {
            let a = s.append(&[sample(i)], now).unwrap();
            if let Some(below) = a.dropped_below {
                lowest_kept = below;
            }
            assert!(s.bytes() <= max, "at {i}: {} bytes", s.bytes());
        }
        assert!(lowest_kept > 1, "something was dropped");
        let dropped = s.counters.dropped;
        assert_eq!(dropped, lowest_kept - 1, "every record below the mark");
        assert_eq!(s.unpacked(), 5_000 - dropped);
        let peeked = s.peek(1).unwrap();
        assert_eq!(peeked[0].0, lowest_kept, "the oldest survivor is next");
        assert_eq!(value(&peeked[0].1), lowest_kept as i64 - 1);
        assert!(segment_files(dir.path()).len() <= 5);
    }

    #[test]
    fn refuse_new_keeps_what_is_spooled_and_counts_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let max = 2 * 4096;
        let (mut s, _) = Spool::open(config(dir.path(), max, FullPolicy::RefuseNew), now).unwrap();
        let mut accepted = 0;
        let mut refused = 0;
        for i in 0..2_000 {
            match s.append(&[sample(i)], now) {
                Ok(_) => accepted += 1,
                Err(AppendError::Full { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 0 && accepted > 0);
        assert_eq!(s.counters.refused, refused);
        assert_eq!(s.counters.dropped, 0);
        assert_eq!(s.unpacked(), accepted);
        assert!(s.full_episode_started());
        assert!(!s.full_episode_started(), "logged once per episode");
        let first = s.peek(1).unwrap();
        assert_eq!(value(&first[0].1), 0, "the oldest is kept");
    }

    #[test]
    fn acked_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut s, _) =
            Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
        for i in 0..2_000 {
            s.append(&[sample(i)], now).unwrap();
        }
        assert!(s.segments() > 3);
        let mut seq = 0;
        while s.unpacked() > 0 {
            seq += 1;
            pack(&mut s, seq, 500);
            s.acked(seq).unwrap();
            s.release(None).unwrap();
        }
        assert_eq!(s.segments(), 1, "only the active segment is left");
        assert_eq!(segment_files(dir.path()).len(), 1);
        drop(s);
        let (_, rec) =
            Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
        assert!(rec.unacked.is_empty() && rec.unpacked == 0);
    }

    #[test]
    fn garbage_never_panics_the_scanner() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..2_000 {
            let mut bytes = MAGIC.to_vec();
            let n = rng.usize(0..200);
            bytes.extend((0..n).map(|_| rng.u8(..)));
            let end = scan(&bytes, |_, _| {});
            assert!(end.valid <= bytes.len() as u64);
        }
    }

    #[test]
    fn a_segment_scan_counts_whole_entries_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut s, _) =
            Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
        for i in 0..3 {
            s.append(&[sample(i)], now).unwrap();
        }
        s.sync(now).unwrap();
        drop(s);
        let file = &segment_files(dir.path())[0];
        let bytes = std::fs::read(file).unwrap();
        let whole = scan_segment(&bytes);
        assert_eq!((whole.entries, whole.torn, whole.corrupt), (3, false, 0));
        assert_eq!(whole.valid, bytes.len() as u64);
        let cut = scan_segment(&bytes[..bytes.len() - 1]);
        assert_eq!((cut.entries, cut.torn), (2, true), "a write cut short");
    }
}
