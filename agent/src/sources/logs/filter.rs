//! Which log lines are sent (`[logs] keep_lines`, `drop_lines`): a debug
//! chatter or a health check's line every second is dropped on the device,
//! before it costs the link, the spool or the hub's store anything.
//!
//! Each entry is text a line holds, with `*` any run and `?` any one byte
//! (the patterns of `files` and `[logs.multiline]`), matched anywhere in
//! the line; case matters. A multi-line entry is matched as a whole.

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

/// The lists as patterns matched against a whole line.
#[derive(Debug, Default)]
pub struct Filter {
    keep: Vec<Vec<u8>>,
    drop: Vec<Vec<u8>>,
}

fn anywhere(list: &[String]) -> Vec<Vec<u8>> {
    list.iter().map(|e| format!("*{e}*").into_bytes()).collect()
}

impl Filter {
    pub fn new(keep: &[String], drop: &[String]) -> Filter {
        Filter {
            keep: anywhere(keep),
            drop: anywhere(drop),
        }
    }

    /// Whether a line is sent: it holds an entry of `keep_lines` (when
    /// there are any) and none of `drop_lines`.
    pub fn sends(&self, text: &str) -> bool {
        let holds = |p: &Vec<u8>| super::glob::matches(p, text.as_bytes());
        (self.keep.is_empty() || self.keep.iter().any(holds)) && !self.drop.iter().any(holds)
    }

    /// Takes the lines not sent out of `out[from..]`, one source's poll,
    /// and counts both kinds in its `count`; how many it took.
    pub fn apply(&self, out: &mut Vec<Record>, from: usize, count: &mut Counts) -> u64 {
        let read = out.len() - from;
        if !(self.keep.is_empty() && self.drop.is_empty()) {
            let mut at = 0;
            out.retain(|r| {
                at += 1;
                at <= from || !matches!(r, Record::Log { text, .. } if !self.sends(text))
            });
        }
        let sent = out.len() - from;
        count.polled = (sent as u64, (read - sent) as u64);
        count.polled.1
    }
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
