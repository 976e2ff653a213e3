//! The `# revoked DEVICE KEY on TIME` lines of the allow list: what
//! `revoke` leaves where a device's line was, so that a hub (after a
//! restart too) names a revoked device that still tries to connect.

use fleetmq_protocol::validate_device_id;

/// A key's `# revoked` line: whose it was, and when (as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Revoked {
    pub(super) device: String,
    /// The rest of the line, e.g. ` on 2026-12-07T05:12:00Z`.
    pub(super) note: String,
}

/// The comment `revoke` leaves for each line it removes:
/// `# revoked DEVICE KEY on TIME`. A hub reads these lines (at start too)
/// to name a revoked device that still tries to connect, rather than take
/// it for a stranger and suggest enrolling it.
pub const REVOKED_MARK: &str = "# revoked ";

impl Revoked {
    /// `device`'s key, revoked at `at`.
    pub(super) fn at(device: &str, at: std::time::SystemTime) -> Revoked {
        Revoked {
            device: device.to_string(),
            note: format!(" on {}", humantime::format_rfc3339_seconds(at)),
        }
    }

    /// The `# revoked` line for `key`.
    pub(super) fn line(&self, key: &str) -> String {
        format!("{REVOKED_MARK}{} {key}{}\n", self.device, self.note)
    }
}

/// The (key, entry) a `# revoked DEVICE KEY ...` comment names, if the
/// line is one (other comments, and a malformed one, are only comments).
pub(super) fn parse_revoked(entry: &str) -> Option<(String, Revoked)> {
    let rest = entry.strip_prefix(REVOKED_MARK)?.trim_start();
    let (device, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (key, note) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    validate_device_id(device).ok()?;
    fleetmq_net::keys::check(key).ok()?;
    let note = match note.trim() {
        "" => String::new(),
        note => format!(" {note}"),
    };
    Some((
        key.to_string(),
        Revoked {
            device: device.to_string(),
            note,
        },
    ))
}
