//! Where each log source was left: `DATA_DIR/logs.state`, read at start
//! and written after every poll the spool took.

use std::collections::BTreeMap;

/// What `logs.state` keeps: where each file was left, and the cursor of
/// the last journal entry taken. A line each, text (the agent carries no
/// JSON reader for it):
///
/// ```text
/// file DEV INODE OFFSET PATH
/// glob PATTERN
/// journal CURSOR
/// ```
///
/// A `glob` line says the pattern was followed: a file it matches that has
/// no `file` line came since.
#[derive(Debug, Default, PartialEq)]
pub struct Kept {
    pub(super) files: BTreeMap<String, Mark>,
    /// (A list: with a set of strings the agent was 3.6 KB larger.)
    pub(super) globs: Vec<String>,
    pub(super) journal: Option<String>,
}

/// Where a file was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) offset: u64,
}

impl Kept {
    /// Reads `logs.state`; a line that does not read is an error naming
    /// it.
    pub fn parse(text: &str) -> Result<Kept, String> {
        let mut kept = Kept::default();
        for (i, line) in text.lines().enumerate() {
            let bad = || format!("line {} ({line:?}) does not read", i + 1);
            match line.split_once(' ') {
                Some(("file", rest)) => {
                    let mut parts = rest.splitn(4, ' ');
                    let mut number = || parts.next().and_then(|n| n.parse::<u64>().ok());
                    let (Some(dev), Some(ino), Some(offset)) = (number(), number(), number())
                    else {
                        return Err(bad());
                    };
                    let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
                    kept.files
                        .insert(path.to_string(), Mark { dev, ino, offset });
                }
                Some(("glob", pattern)) if !pattern.is_empty() => {
                    kept.globs.push(pattern.to_string());
                }
                Some(("journal", cursor)) if !cursor.is_empty() => {
                    kept.journal = Some(cursor.to_string());
                }
                _ => return Err(bad()),
            }
        }
        Ok(kept)
    }

    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        for (path, m) in &self.files {
            out.push_str(&format!("file {} {} {} {path}\n", m.dev, m.ino, m.offset));
        }
        for pattern in &self.globs {
            out.push_str(&format!("glob {pattern}\n"));
        }
        if let Some(cursor) = &self.journal {
            out.push_str(&format!("journal {cursor}\n"));
        }
        out
    }
}
