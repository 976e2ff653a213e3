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

mod entry;
mod recover;
mod tail;

use entry::{Entry, HEADER, MAGIC, MAX_ENTRY, checksum, encode, scan};
pub use entry::{SegmentScan, scan_segment};
use tail::Tail;

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
    /// When the oldest write not yet synced was made; `None` when all is
    /// synced. An interval sync is due `fsync_interval` after it, so the
    /// sync keeps in step with the writes (one wake-up for sampling,
    /// packing and syncing) rather than with the last sync.
    dirty_since: Option<Instant>,
    full_episode: bool,
    /// Every record after the cursor, as written, while they are few: the
    /// next batch is packed from here rather than read back from the file
    /// just written (an open, a read and a close each interval). `None`
    /// when they are not all here (after a restart, or while the hub is
    /// away and they pile up); then `peek` reads the file, and the tail is
    /// kept again once every record is in a batch.
    tail: Option<Tail>,
    pub counters: SpoolCounters,
}

/// Bytes the spool keeps on disk, in a file of their own (`reserve`), for
/// its own bookkeeping. When the disk is full (the spool filled it, with
/// `refuse_new`, or something else did), the first batch, ack or abandon
/// entry that finds no room frees them: the spool can go on sending what it
/// holds, and delete it once acked, which makes room again. The reserve is
/// made again when there is room.
const RESERVE_BYTES: usize = 64 << 10;

pub use fleetmq_net::files::disk_full;

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

use fleetmq_net::files::with_path;

impl Spool {
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
        self.dirty_since = None;
        Ok(())
    }

    /// Writes encoded entries to the active segment, all or nothing.
    fn write(&mut self, bytes: &[u8], now: Instant) -> io::Result<()> {
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
        self.dirty_since.get_or_insert(now);
        Ok(())
    }

    fn reserve_path(dir: &Path) -> PathBuf {
        dir.join("reserve")
    }

    /// Makes the reserve if it is missing and the disk has room for it; a
    /// full disk leaves it for later.
    pub(super) fn keep_reserve(dir: &Path) {
        fleetmq_net::files::keep_reserve(&Self::reserve_path(dir), RESERVE_BYTES);
    }

    /// Frees the reserve for bookkeeping on a full disk; false if it was
    /// gone already.
    pub fn give_up_reserve(&self) -> bool {
        let freed = fleetmq_net::files::give_up_reserve(&Self::reserve_path(&self.cfg.dir));
        if freed {
            tracing::warn!(
                "disk full: the spool gave up its {} KB reserve to go on recording batches and acks; it is made again when there is room",
                RESERVE_BYTES >> 10
            );
        }
        freed
    }

    /// Writes a bookkeeping entry (batch, ack, abandon); if the disk is
    /// full, frees the reserve and tries once more.
    fn write_bookkeeping(&mut self, bytes: &[u8], now: Instant) -> io::Result<()> {
        match self.write(bytes, now) {
            Err(e) if disk_full(&e) && self.give_up_reserve() => self.write(bytes, now),
            other => other,
        }
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
        // The cursor may move past records the tail holds: read the file
        // until every record is in a batch again.
        self.tail = None;
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
        let mut ends = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            bytes.extend(encode(&Entry::Record {
                id: first_id + i as u64,
                record: record.clone(),
            }));
            ends.push(bytes.len() as u64);
        }
        let need = bytes.len() as u64;
        let result = self.make_room(need).and_then(|below| {
            if self.active().bytes >= self.cfg.segment_bytes {
                self.rotate()?;
            }
            match self.write(&bytes, now) {
                Ok(()) => Ok(below),
                // The disk itself is full: the policy applies as at the cap.
                Err(e) if disk_full(&e) => {
                    if self.cfg.policy == FullPolicy::DropOldest && self.segments.len() > 1 {
                        let below = self.drop_oldest()?;
                        self.write(&bytes, now)?;
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
                self.keep_in_tail(first_id, records, &ends);
                self.next_id += records.len() as u64;
                self.unpacked += records.len() as u64;
                if self.cfg.fsync == Fsync::Always {
                    self.sync()?;
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

    /// Adds records just written to the end of the active segment (ids from
    /// `first_id`, each ending `ends[i]` bytes into what was written) to
    /// the tail, or gives the tail up when they would make it too big.
    fn keep_in_tail(&mut self, first_id: u64, records: &[Record], ends: &[u64]) {
        let written = ends.last().copied().unwrap_or(0);
        let (segment, start) = (self.active().first_id, self.active().bytes - written);
        if let Some(tail) = &mut self.tail
            && !tail.push(first_id, records, ends, segment, start)
        {
            self.tail = None;
        }
    }

    /// True once per episode of the spool being full: the caller logs then.
    pub fn full_episode_started(&mut self) -> bool {
        !std::mem::replace(&mut self.full_episode, true)
    }

    /// Up to `max` records not yet in a batch, oldest first, each with the
    /// position just after it (to pass to `packed`).
    pub fn peek(&mut self, max: usize) -> io::Result<Vec<(u64, Record, Pos)>> {
        match &self.tail {
            Some(tail) => Ok(tail.peek(max)),
            None => self.peek_file(max),
        }
    }

    /// `peek`, reading the segment files.
    fn peek_file(&mut self, max: usize) -> io::Result<Vec<(u64, Record, Pos)>> {
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
            self.write_bookkeeping(
                &encode(&Entry::Batch {
                    seq,
                    first,
                    last: last_id,
                }),
                now,
            )?;
        }
        self.cursor = after;
        self.unpacked = self.unpacked.saturating_sub(used);
        self.packed_upto = self.packed_upto.max(last_id);
        if let Some(tail) = &mut self.tail {
            tail.packed_through(last_id);
        }
        if self.unpacked == 0 && self.tail.is_none() {
            self.tail = Some(Tail::default());
        }
        if self.cfg.fsync == Fsync::Always {
            self.sync()?;
        }
        Ok(())
    }

    /// The hub acked `seq`. Not synced: losing an ack only means a resend,
    /// which the hub recognises.
    pub fn acked(&mut self, seq: u64) -> io::Result<()> {
        self.write_bookkeeping(&encode(&Entry::Ack { seq }), Instant::now())
    }

    /// Batch `old` goes out again as `new`, carrying spool ids `first` to
    /// `last`: recorded as the new batch, then the old one abandoned, so a
    /// restart resends the records under `new` only.
    pub fn renumbered(
        &mut self,
        old: u64,
        new: u64,
        first: u64,
        last: u64,
        now: Instant,
    ) -> io::Result<()> {
        self.write_bookkeeping(
            &encode(&Entry::Batch {
                seq: new,
                first,
                last,
            }),
            now,
        )?;
        self.write_bookkeeping(&encode(&Entry::Abandon { seq: old }), now)
    }

    /// Batch `seq` will not be sent again (its records were dropped).
    pub fn abandoned(&mut self, seq: u64) -> io::Result<()> {
        self.write_bookkeeping(&encode(&Entry::Abandon { seq }), Instant::now())
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
            Self::keep_reserve(&self.cfg.dir);
        }
        Ok(())
    }

    /// Syncs if a write has waited the interval for it.
    pub fn sync_if_due(&mut self, now: Instant) -> io::Result<()> {
        match self.cfg.fsync {
            Fsync::Interval(every) if self.dirty_since.is_some_and(|t| now >= t + every) => {
                self.sync()
            }
            _ => Ok(()),
        }
    }

    /// When the next interval sync is due, if one is waiting.
    pub fn next_sync(&self) -> Option<Instant> {
        match self.cfg.fsync {
            Fsync::Interval(every) => self.dirty_since.map(|t| t + every),
            _ => None,
        }
    }

    /// Syncs what is written, if anything is unsynced.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty_since.is_some() {
            self.file.sync_data()?;
            self.dirty_since = None;
        }
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
mod tests;
