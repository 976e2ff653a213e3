//! Which log lines are sent (`[logs] keep_lines`, `drop_lines`): a debug
//! chatter or a health check's line every second is dropped on the device,
//! before it costs the link, the spool or the hub's store anything.
//!
//! Each entry is text a line holds, with `*` any run and `?` any one byte
//! (the patterns of `files` and `[logs.multiline]`), matched anywhere in
//! the line; case matters. A multi-line entry is matched as a whole.
//! `[logs.filters]` gives a file, a pattern of files or the journal lists
//! of its own, which apply after `[logs]`'s: such a line is sent when it
//! passes both. A unit of the journal (`journal:UNIT`) can have lists of
//! its own too, which apply after the journal's.

use crate::telemetry::uplink::Record;

/// Most entries in each list.
pub const MAX_ENTRIES: usize = 64;
/// Longest entry, in bytes.
pub const MAX_ENTRY_LEN: usize = 256;

/// Why a `keep_lines` or `drop_lines` list cannot be used, if it cannot.
pub fn check(list: &[String]) -> Result<(), String> {
    if list.len() > MAX_ENTRIES {
        return Err(format!(
            "{} entries: at most {MAX_ENTRIES} (a line is matched against each)",
            list.len()
        ));
    }
    match list
        .iter()
        .find(|e| e.is_empty() || e.len() > MAX_ENTRY_LEN || e.chars().any(char::is_control))
    {
        Some(e) => Err(format!(
            "{e:?}: give text a line holds, 1 to {MAX_ENTRY_LEN} printable bytes (\"level=debug\", \"GET /health* 200\")"
        )),
        None => Ok(()),
    }
}

/// The lists as patterns matched against a whole line: `[logs]`'s, and a
/// source's own (`[logs.filters]`) after them.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Each list of kept texts a line must hold one of (empty lists are
    /// left out): `[logs]`'s, then the source's own.
    keep: Vec<Vec<Vec<u8>>>,
    drop: Vec<Vec<u8>>,
}

fn anywhere(list: &[String]) -> Vec<Vec<u8>> {
    list.iter().map(|e| format!("*{e}*").into_bytes()).collect()
}

impl Filter {
    pub fn new(keep: &[String], drop: &[String]) -> Filter {
        Filter::default().and(keep, drop)
    }

    /// This filter, then `keep` and `drop` too: a line is sent when both
    /// would send it.
    pub fn and(mut self, keep: &[String], drop: &[String]) -> Filter {
        if !keep.is_empty() {
            self.keep.push(anywhere(keep));
        }
        self.drop.extend(anywhere(drop));
        self
    }

    /// Whether a line is sent: it holds an entry of each `keep_lines` that
    /// has any, and none of any `drop_lines`.
    pub fn sends(&self, text: &str) -> bool {
        let holds = |p: &Vec<u8>| super::glob::matches(p, text.as_bytes());
        self.keep.iter().all(|list| list.iter().any(holds)) && !self.drop.iter().any(holds)
    }

    /// Takes the lines not sent out of `out[from..]`, one source's poll,
    /// and counts both kinds in its `count`; how many it took.
    pub fn apply(&self, out: &mut Vec<Record>, from: usize, count: &mut Counts) -> u64 {
        if self.keep.is_empty() && self.drop.is_empty() {
            // Nothing to leave out: every line of the poll is sent, unread.
            count.polled = ((out.len() - from) as u64, 0);
            return 0;
        }
        apply_each(out, from, count, |_| Some(self))
    }
}

/// [`Filter::apply`] with each line's filter the one its source (`journal:UNIT`
/// for the journal's) is given by `filter_of`; a line it gives none is sent.
pub fn apply_each<'f>(
    out: &mut Vec<Record>,
    from: usize,
    count: &mut Counts,
    filter_of: impl Fn(&str) -> Option<&'f Filter>,
) -> u64 {
    let read = out.len() - from;
    let mut at = 0;
    out.retain(|r| {
        at += 1;
        at <= from
            || !matches!(r, Record::Log { source, text, .. }
                if filter_of(source).is_some_and(|f| !f.sends(text)))
    });
    let sent = out.len() - from;
    count.polled = (sent as u64, (read - sent) as u64);
    count.polled.1
}

/// The lines of one source sent and left out, and those of the last poll,
/// which count once the spool took them.
#[derive(Debug, Default)]
pub struct Counts {
    pub sent: u64,
    pub dropped: u64,
    polled: (u64, u64),
}

impl Counts {
    /// The last poll's lines are in the spool.
    pub fn commit(&mut self) {
        self.sent += self.polled.0;
        self.dropped += self.polled.1;
        self.polled = (0, 0);
    }

    /// The last poll's lines were not taken: the next poll reads them again.
    pub fn rewind(&mut self) {
        self.polled = (0, 0);
    }
}
