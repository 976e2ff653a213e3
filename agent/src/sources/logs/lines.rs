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
            lines.push(String::from_utf8_lossy(&line[..cut]).into_owned());
            used += cut;
            continue;
        }
        lines.push(text.into_owned());
        used += took;
    }
    (lines, used)
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
