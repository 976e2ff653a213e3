//! Log text into lines: whole lines only, long ones in pieces, bytes that
//! are not UTF-8 as U+FFFD.

use fleetmq_protocol::telemetry::MAX_LOG_LINE_LEN;

/// The complete lines at the start of `bytes`, at most `budget` of them,
/// without their line ends (`\n`, or `\r\n`), and how many bytes they
/// took. A line longer than [`MAX_LOG_LINE_LEN`] is sent in pieces of at
/// most that many bytes; what follows the last line end waits for its end,
/// unless `at_end` (the file will not grow). Bytes that are not UTF-8 are
/// sent as U+FFFD.
pub fn split_lines(bytes: &[u8], budget: usize, at_end: bool) -> (Vec<String>, usize) {
    texts(lines_ending(bytes, budget, at_end))
}

/// The lines' texts, and where the last ends.
pub(super) fn texts(lines: Vec<(String, usize)>) -> (Vec<String>, usize) {
    let used = lines.last().map_or(0, |(_, end)| *end);
    (lines.into_iter().map(|(text, _)| text).collect(), used)
}

/// The same lines, each with where it ends in `bytes`.
pub(super) fn lines_ending(bytes: &[u8], budget: usize, at_end: bool) -> Vec<(String, usize)> {
    let mut lines = Vec::new();
    let mut used = 0;
    while lines.len() < budget && used < bytes.len() {
        let rest = &bytes[used..];
        let window = &rest[..rest.len().min(MAX_LOG_LINE_LEN + 1)];
        let (line, took) = match window.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], end + 1),
            None if rest.len() > MAX_LOG_LINE_LEN => {
                let cut = piece_end(rest);
                (&rest[..cut], cut)
            }
            None if at_end => (rest, rest.len()),
            None => break,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        // U+FFFD takes three bytes where a stray byte took one.
        if text.len() > MAX_LOG_LINE_LEN {
            let cut = piece_end(&line[..MAX_LOG_LINE_LEN / 3]);
            used += cut;
            lines.push((String::from_utf8_lossy(&line[..cut]).into_owned(), used));
            continue;
        }
        used += took;
        lines.push((text.into_owned(), used));
    }
    lines
}

/// Lines joined into entries (a stack trace with the line that logged
/// it): a line that `begins` (a pattern of `*` and `?`, matched against
/// the line's start) begins an entry, and any other continues the entry
/// before it, after a `\n`, while the entry stays within
/// [`MAX_LOG_LINE_LEN`] (past it, the line begins an entry of its own).
/// The last entry may go on in lines not written yet: it is taken only
/// when `last_done`, or when no entry before it is complete and `stuck`
/// (the poll's budget of lines was spent on it). Returns the entries and
/// where the last one taken ends in the bytes (the rest is read again).
pub(super) fn join_entries(
    lines: Vec<(String, usize)>,
    begins: &[u8],
    last_done: bool,
    stuck: bool,
) -> (Vec<String>, usize) {
    let mut entries = Vec::new();
    let mut used = 0;
    let mut open: Option<(String, usize)> = None;
    for (text, end) in lines {
        let first = super::glob::matches(begins, text.as_bytes());
        match &mut open {
            Some((entry, at)) if !first && entry.len() + 1 + text.len() <= MAX_LOG_LINE_LEN => {
                entry.push('\n');
                entry.push_str(&text);
                *at = end;
            }
            _ => {
                if let Some((entry, at)) = open.replace((text, end)) {
                    entries.push(entry);
                    used = at;
                }
            }
        }
    }
    if let Some((entry, at)) = open
        && (last_done || (stuck && entries.is_empty()))
    {
        entries.push(entry);
        used = at;
    }
    (entries, used)
}

/// Where a piece of a long line ends: at most [`MAX_LOG_LINE_LEN`] bytes,
/// not inside a UTF-8 character.
fn piece_end(bytes: &[u8]) -> usize {
    let mut cut = bytes.len().min(MAX_LOG_LINE_LEN);
    // Back off continuation bytes (10xxxxxx), at most three.
    for _ in 0..3 {
        if cut < bytes.len() && cut > 0 && bytes[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
    }
    cut.max(1)
}
