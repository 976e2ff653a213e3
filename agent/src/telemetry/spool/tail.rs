//! The records after the spool's cursor, kept in memory while they are few,
//! so that the next batch is packed from them rather than read back from
//! the segment just written (an open, a read and a close each interval).

use std::collections::VecDeque;

use super::Pos;
use crate::telemetry::uplink::Record;

/// The most the tail holds, in bytes on disk, before the spool goes back to
/// reading its files.
const TAIL_BYTES: usize = 64 << 10;

/// Records after the cursor, in order: each as `peek` gives it (id, record,
/// the position after it) and its size on disk.
#[derive(Default)]
pub(super) struct Tail {
    records: VecDeque<((u64, Record, Pos), usize)>,
    /// Their size on disk, together.
    bytes: usize,
}

impl Tail {
    /// Adds records just written at `start` in segment `segment` (ids from
    /// `first_id`, each ending `ends[i]` bytes into what was written).
    /// False, adding nothing, if they would make the tail too big: the
    /// caller then gives it up.
    pub(super) fn push(
        &mut self,
        first_id: u64,
        records: &[Record],
        ends: &[u64],
        segment: u64,
        start: u64,
    ) -> bool {
        let written = ends.last().copied().unwrap_or(0) as usize;
        if self.bytes + written > TAIL_BYTES {
            return false;
        }
        let mut from = 0;
        for (i, (record, &end)) in records.iter().zip(ends).enumerate() {
            let pos = Pos {
                segment,
                offset: start + end,
            };
            let size = (end - from) as usize;
            self.records
                .push_back(((first_id + i as u64, record.clone(), pos), size));
            from = end;
        }
        self.bytes += written;
        true
    }

    /// Up to `max` records, oldest first, as `Spool::peek` gives them.
    pub(super) fn peek(&self, max: usize) -> Vec<(u64, Record, Pos)> {
        let oldest = self.records.iter().take(max);
        oldest.map(|(peeked, _)| peeked.clone()).collect()
    }

    /// Forgets the records up to id `last`: they are in a batch.
    pub(super) fn packed_through(&mut self, last: u64) {
        while let Some(((id, _, _), size)) = self.records.front()
            && *id <= last
        {
            self.bytes -= size;
            self.records.pop_front();
        }
    }
}
