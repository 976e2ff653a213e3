//! Text a peer sent, made safe to print on a terminal: control characters
//! (escape sequences, a carriage return that hides a line, BEL) and the
//! Unicode controls that reorder text are shown as `\u{..}` escapes, never
//! acted on; and a word quoted for a shell, for a command line the hub
//! shows an operator to paste.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a character must not reach a terminal as it is: C0 and C1
/// controls (ESC, CSI, BEL, CR...) and the bidirectional overrides and
/// isolates that make text read other than it is stored.
fn unsafe_char(c: char, keep_newlines: bool) -> bool {
    (c.is_control() && !(keep_newlines && (c == '\n' || c == '\t')))
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escaped(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c, keep_newlines) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A device's text for one line: every control character escaped,
/// newlines too.
pub fn line(s: &str) -> Cow<'_, str> {
    escaped(s, false)
}

/// A device's text of many lines (command output): newlines and tabs kept,
/// every other control character escaped.
pub fn block(s: &str) -> Cow<'_, str> {
    escaped(s, true)
}

/// Cuts `s` to at most `max` bytes, at a character boundary; says whether
/// anything was cut.
pub fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    true
}

/// `word` as a shell takes it: as it is when every character is one a
/// shell passes on as it is, else in single quotes (`'memory<1G'`,
/// `'it'\''s'`, `''`), so that a line the hub shows can be pasted.
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:/=+@%~^".contains(c);
    if !word.is_empty() && word.chars().all(plain) && !word.starts_with('~') {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_word_is_quoted_only_when_a_shell_would_act_on_it() {
        assert_eq!(shell_word("model~zero"), "model~zero");
        assert_eq!(shell_word("/usr/bin/df"), "/usr/bin/df");
        assert_eq!(shell_word("memory<1G"), "'memory<1G'");
        assert_eq!(shell_word("kernel!=6.6"), "'kernel!=6.6'");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("~root"), "'~root'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let mut s = String::from("héllo");
        assert!(truncate(&mut s, 2));
        assert_eq!(s, "h");
        assert!(!truncate(&mut s, 5));
    }

    #[test]
    fn control_characters_are_shown_not_acted_on() {
        assert_eq!(line("pi-kitchen"), "pi-kitchen");
        assert!(matches!(line("plain text"), Cow::Borrowed(_)));
        assert_eq!(line("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(line("up\rFAKE"), "up\\u{d}FAKE");
        assert_eq!(line("two\nlines"), "two\\u{a}lines");
        assert_eq!(line("\u{9b}31m"), "\\u{9b}31m", "a C1 CSI");
        assert_eq!(
            line("abc\u{202e}fed"),
            "abc\\u{202e}fed",
            "right-to-left override"
        );
        assert_eq!(block("out\n\tindented\x07\n"), "out\n\tindented\\u{7}\n");
    }
}
