//! Which batch numbers of a device the store holds: its highest, and the
//! numbers below that it skipped and may still get (holes). A batch above
//! the highest, or in a hole, is new and is stored without looking at the
//! batches table; any other number is a resend or another agent's, told
//! apart by the bodies stored under it ([`super::telemetry`]).
//!
//! This is what keeps a resent batch stored once. A unique index on
//! `(device, seq)` did it before, at a price every commit paid: one leaf of
//! the index written per device in the round, next to the leaf of the
//! `(device, id)` index that queries by device need (`(device, id, seq)`
//! now, so that a number that is not new is looked for in the index
//! alone). The numbers live in
//! the device's row, which the round updates anyway, in the same
//! transaction as its batches, and in memory.
//!
//! An agent sends its batches in order, so a hole comes from a batch lost
//! on the way while later ones arrived (its resend fills it), or from the
//! numbers an agent skips after a crash (the rest of its reserved block of
//! 1,024, never sent). Every number below a device's first stored batch is
//! a hole too: nothing of the device's was stored before it, so a batch
//! that batch overtook is new. Holes are kept as ranges, so a skipped block costs
//! one; at most [`HOLE_RANGES_MAX`] are kept, the highest. A batch in a
//! hole let go is looked for like a resend and, not found, renumbered: its
//! records are stored once, under the new number.

use std::collections::BTreeMap;

/// Ranges of holes kept a device, the highest.
pub const HOLE_RANGES_MAX: usize = 64;

/// The batch numbers of one device the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Numbers {
    /// The highest stored; `None` before the device's first batch.
    high: Option<u64>,
    /// Numbers below `high` not stored: first → last, inclusive.
    holes: BTreeMap<u64, u64>,
}

impl Numbers {
    /// Numbers as stored in the device's row: the highest, and the holes
    /// as written by [`Numbers::holes_text`]. Holes that do not parse are
    /// dropped (each such batch, if it comes, is renumbered, not lost).
    pub fn from_row(high: Option<u64>, holes: Option<&str>) -> Numbers {
        let ranges: Vec<(u64, u64)> = holes
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        let below = |n: u64| high.is_some_and(|h| n < h);
        let holes = ranges
            .into_iter()
            .filter(|&(first, last)| first <= last && below(last))
            .collect();
        Numbers { high, holes }
    }

    /// Whether `seq` is surely not stored: above the highest, or a hole.
    pub fn is_new(&self, seq: u64) -> bool {
        self.high.is_none_or(|h| seq > h) || self.hole_of(seq).is_some()
    }

    /// The hole `seq` is in, as (first, last).
    fn hole_of(&self, seq: u64) -> Option<(u64, u64)> {
        let (&first, &last) = self.holes.range(..=seq).next_back()?;
        (seq <= last).then_some((first, last))
    }

    /// Notes `seq` as stored: a hole filled, or a new highest, with the
    /// numbers it skipped as a hole.
    pub fn add(&mut self, seq: u64) {
        match self.high {
            Some(h) if seq <= h => {
                if let Some((first, last)) = self.hole_of(seq) {
                    self.holes.remove(&first);
                    if first < seq {
                        self.holes.insert(first, seq - 1);
                    }
                    if seq < last {
                        self.holes.insert(seq + 1, last);
                    }
                }
            }
            Some(h) => {
                if seq > h + 1 {
                    self.holes.insert(h + 1, seq - 1);
                }
                self.high = Some(seq);
            }
            None => {
                // Nothing of the device's is stored: every number below its
                // first batch is free, and one that comes later (a resend
                // that was overtaken, a batch throttled while the next went
                // through) is new, not another agent's.
                if seq > 0 {
                    self.holes.insert(0, seq - 1);
                }
                self.high = Some(seq);
            }
        }
        while self.holes.len() > HOLE_RANGES_MAX {
            self.holes.pop_first();
        }
    }

    /// The highest number stored.
    pub fn high(&self) -> Option<u64> {
        self.high
    }

    /// The lowest number above everything stored: where an agent whose
    /// numbers are taken goes on from.
    pub fn next_free(&self) -> u64 {
        self.high.map_or(0, |h| h.saturating_add(1))
    }

    /// The holes for the device's row, `[[first, last], ...]`; `None`
    /// without any.
    pub fn holes_text(&self) -> Option<String> {
        if self.holes.is_empty() {
            return None;
        }
        let ranges: Vec<(u64, u64)> = self.holes.iter().map(|(&f, &l)| (f, l)).collect();
        serde_json::to_string(&ranges).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_batch_of_any_number_is_new_and_so_is_every_number_below_it() {
        let mut n = Numbers::default();
        assert!(n.is_new(0) && n.is_new(500));
        n.add(500);
        assert!(!n.is_new(500) && n.is_new(501));
        assert!(
            n.is_new(0) && n.is_new(1) && n.is_new(499),
            "nothing below the first batch is stored"
        );
        assert_eq!(
            (n.high(), n.next_free(), n.holes_text().as_deref()),
            (Some(500), 501, Some("[[0,499]]"))
        );
        n.add(1);
        assert!(!n.is_new(1) && n.is_new(2));
    }

    #[test]
    fn numbers_skipped_are_holes_until_their_batches_come() {
        let mut n = Numbers::default();
        n.add(1);
        n.add(5);
        assert!(n.is_new(2) && n.is_new(3) && n.is_new(4));
        assert!(!n.is_new(1) && !n.is_new(5));
        n.add(3);
        assert!(!n.is_new(3) && n.is_new(2) && n.is_new(4));
        assert_eq!(n.holes_text().as_deref(), Some("[[0,0],[2,2],[4,4]]"));
        n.add(2);
        n.add(4);
        assert_eq!(
            n.holes_text().as_deref(),
            Some("[[0,0]]"),
            "0 was never sent"
        );
        assert_eq!(n.next_free(), 6);
    }

    #[test]
    fn a_block_skipped_after_a_crash_is_one_hole() {
        let mut n = Numbers::default();
        n.add(1000);
        n.add(2049);
        assert_eq!(n.holes_text().as_deref(), Some("[[0,999],[1001,2048]]"));
        assert!(n.is_new(1001) && n.is_new(1500) && n.is_new(2048));
        n.add(1001);
        assert_eq!(n.holes_text().as_deref(), Some("[[0,999],[1002,2048]]"));
    }

    #[test]
    fn the_highest_holes_are_kept_when_there_are_too_many() {
        let mut n = Numbers::default();
        n.add(1);
        for k in 1..=HOLE_RANGES_MAX as u64 + 1 {
            n.add(1 + 2 * k);
        }
        assert!(!n.is_new(2), "the lowest let go");
        assert!(n.is_new(4), "the next one kept");
        assert!(n.is_new(2 * HOLE_RANGES_MAX as u64 + 2));
    }

    /// Whatever order numbers come in (resends, late batches, blocks
    /// skipped), and through the device's row after every one, a number
    /// stored is never taken for new again, the holes' cap included:
    /// checked against every number stored.
    #[test]
    fn a_stored_number_is_never_new_again() {
        for seed in 0..100 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut n = Numbers::default();
            let mut stored = std::collections::BTreeSet::new();
            let mut next = rng.u64(0..5);
            for _ in 0..400 {
                let seq = match rng.u8(0..10) {
                    // Mostly in order, sometimes skipping a block.
                    0..=5 => {
                        next += if rng.u8(0..20) == 0 {
                            rng.u64(2..1500)
                        } else {
                            1
                        };
                        next
                    }
                    // A resend or a late batch below the highest.
                    _ => rng.u64(0..=next),
                };
                if n.is_new(seq) {
                    assert!(stored.insert(seq), "seed {seed}: {seq} stored twice");
                    n.add(seq);
                }
                let text = n.holes_text();
                n = Numbers::from_row(n.high(), text.as_deref());
            }
            for seq in 0..=next + 1 {
                if stored.contains(&seq) {
                    assert!(!n.is_new(seq), "seed {seed}: {seq} is stored");
                }
            }
        }
    }

    #[test]
    fn numbers_read_back_from_the_row_are_the_numbers_written() {
        let mut n = Numbers::default();
        for seq in [3, 9, 4, 12] {
            n.add(seq);
        }
        let text = n.holes_text();
        assert_eq!(Numbers::from_row(n.high(), text.as_deref()), n);
        assert_eq!(
            Numbers::from_row(Some(7), Some("not json")),
            Numbers::from_row(Some(7), None),
            "holes that do not parse are dropped"
        );
        assert_eq!(
            Numbers::from_row(Some(7), Some("[[3,4],[6,9],[5,2]]"))
                .holes_text()
                .as_deref(),
            Some("[[3,4]]"),
            "only ranges below the highest are holes"
        );
    }
}
