//! Device ids, group names, and the topic prefixes that route broadcasts.
//!
//! Broadcast frames on the hub's PUB socket start with a topic frame. ZeroMQ
//! subscriptions match by prefix, so every topic ends in `/`: a device
//! subscribed to `dev/pi-1/` does not also receive `dev/pi-10/`.
//!
//! | topic | who receives it |
//! |---|---|
//! | `chat/` | agents in the chat room |
//! | `all/` | every agent |
//! | `group/<group>/` | agents configured with that group |
//! | `dev/<device id>/` | that one device |

use serde::{Deserialize, Serialize};

/// Topic of the chat room.
pub const CHAT_TOPIC: &str = "chat/";
/// Topic every agent subscribes to.
pub const ALL_TOPIC: &str = "all/";
/// Longest device id or group name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A name that is not a valid device id or group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty names cannot route anything.
    #[error("{what} is empty; use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ -")]
    Empty {
        /// "device id", "group" or "operator name".
        what: &'static str,
    },
    /// Longer than [`MAX_NAME_LEN`].
    #[error("{what} {name:?} is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// "device id", "group" or "operator name".
        what: &'static str,
        /// The name, for the message.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Contains a character outside the allowed set.
    #[error("{what} {name:?} contains {bad:?}; use only A-Z a-z 0-9 . _ -")]
    BadChar {
        /// "device id", "group" or "operator name".
        what: &'static str,
        /// The name, for the message.
        name: String,
        /// The first character that is not allowed.
        bad: char,
    },
}

fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            name: name.into(),
            len: name.len(),
        });
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => Err(NameError::BadChar {
            what,
            name: name.into(),
            bad,
        }),
        None => Ok(()),
    }
}

/// Checks a device id: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
///
/// The device id is the agent's ZeroMQ routing id and part of topic names,
/// so it must not contain `/` or bytes that would be ambiguous in a prefix.
pub fn validate_device_id(id: &str) -> Result<(), NameError> {
    validate("device id", id)
}

/// The keys an agent of this release takes from the hub's desired
/// configuration, besides the free `app.*` keys; each only where the
/// device's `[remote] may_set` names it. The hub's `config set` refuses
/// any other key, a typo most likely, unless told the agents are newer.
pub const CONFIG_KEYS: &[&str] = &[
    "telemetry.sample_interval_ms",
    "host.interval_ms",
    "host.collect",
    "host.mounts",
    "host.interfaces",
    "ingest.statsd_interval_ms",
    "ingest.percentiles",
    "jobs.allow",
    "commands.allow",
    "exec.programs",
    "logs.files",
    "logs.journal",
    "logs.journal_units",
    "logs.journal_priority",
    "logs.keep_lines",
    "logs.drop_lines",
    "logs.filters.keep_lines",
    "logs.filters.drop_lines",
    "logs.multiline",
    "logs.poll_ms",
    "logs.max_lines_per_s",
];

/// Whether an agent of this release takes `key` from the hub: one of
/// [`CONFIG_KEYS`], or a free `app.NAME`.
pub fn is_config_key(key: &str) -> bool {
    CONFIG_KEYS.contains(&key)
        || key
            .strip_prefix("app.")
            .is_some_and(|name| !name.is_empty())
}

/// Checks an operator's name (in the hub's operator allow list), with the
/// same rules as a device id.
pub fn validate_operator_name(name: &str) -> Result<(), NameError> {
    validate("operator name", name)
}

/// Checks a group name, with the same rules as a device id.
pub fn validate_group(group: &str) -> Result<(), NameError> {
    validate("group", group)
}

/// Who an operator broadcast is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Target {
    /// Every agent.
    All,
    /// Agents configured with this group.
    Group(String),
    /// One device.
    Device(String),
}

impl Target {
    /// The topic prefix this target publishes on, after validating the name.
    pub fn topic(&self) -> Result<String, NameError> {
        match self {
            Target::All => Ok(ALL_TOPIC.to_string()),
            Target::Group(g) => validate_group(g).map(|()| group_topic(g)),
            Target::Device(d) => validate_device_id(d).map(|()| device_topic(d)),
        }
    }
}

/// The topic for a group, `group/<group>/`.
pub fn group_topic(group: &str) -> String {
    format!("group/{group}/")
}

/// The group a topic is published to: `g` for `group/g/...`, else `None`.
pub fn topic_group(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("group/")?;
    rest.split_once('/').map(|(group, _)| group)
}

/// The topic for one device, `dev/<id>/`. The hub publishes nothing on
/// it: what is meant for one device travels on that device's own telemetry
/// connection. An agent subscribes to it so the hub sees its broadcast
/// subscription is live.
pub fn device_topic(id: &str) -> String {
    format!("dev/{id}/")
}

/// Separates the device id from the nonce in an agent DEALER's routing id.
pub const ROUTE_SEPARATOR: char = '@';
/// Fewest characters of a route's nonce.
pub const NONCE_MIN: usize = 16;
/// Most characters of a route's nonce.
pub const NONCE_MAX: usize = 64;

/// A routing id that is not `<device id>@<nonce>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No `@`: an agent older than the hub, or a client that sets the bare
    /// device id.
    #[error(
        "routing id {0:?} carries no nonce: it must be DEVICE_ID@NONCE (an agent older than the hub? upgrade it)"
    )]
    NoNonce(String),
    /// The part before `@` is not a device id.
    #[error(transparent)]
    Device(#[from] NameError),
    /// The part after `@` is not 16 to 64 characters from `A-Z a-z 0-9`.
    #[error(
        "the nonce of routing id {0:?} must be {NONCE_MIN} to {NONCE_MAX} characters from A-Z a-z 0-9"
    )]
    BadNonce(String),
}

/// The routing id of an agent's telemetry and commands DEALERs:
/// `<device id>@<nonce>`. The nonce is drawn at random when the agent
/// starts and travels only inside the CURVE handshake, so no other peer
/// can claim the route, and the hub sends what is meant for a device only
/// to the route it last heard that device's key on.
pub fn route(device: &str, nonce: &str) -> String {
    format!("{device}{ROUTE_SEPARATOR}{nonce}")
}

/// The device id of a routing id `<device id>@<nonce>`, checking both parts.
pub fn route_device(id: &[u8]) -> Result<&str, RouteError> {
    let text = std::str::from_utf8(id)
        .map_err(|_| RouteError::NoNonce(String::from_utf8_lossy(id).into_owned()))?;
    let Some((device, nonce)) = text.split_once(ROUTE_SEPARATOR) else {
        return Err(RouteError::NoNonce(text.to_string()));
    };
    validate_device_id(device)?;
    let nonce_ok = (NONCE_MIN..=NONCE_MAX).contains(&nonce.len())
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric());
    if !nonce_ok {
        return Err(RouteError::BadNonce(text.to_string()));
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_are_the_listed_ones_and_app_names() {
        for key in [
            "host.interval_ms",
            "exec.programs",
            "app.greeting",
            "app.a.b",
        ] {
            assert!(is_config_key(key), "{key}");
        }
        for key in ["host.intervl_ms", "host", "app.", "spool.max_bytes", "hub"] {
            assert!(!is_config_key(key), "{key}");
        }
    }

    #[test]
    fn a_group_topic_names_its_group_and_no_other_topic_does() {
        assert_eq!(topic_group(&group_topic("north")), Some("north"));
        assert_eq!(topic_group("group/north/x"), Some("north"));
        assert_eq!(topic_group(ALL_TOPIC), None);
        assert_eq!(topic_group(CHAT_TOPIC), None);
        assert_eq!(topic_group("group/north"), None, "not a whole group topic");
    }

    #[test]
    fn device_ids_accept_the_documented_set_only() {
        assert_eq!(validate_device_id("pi-kitchen_01.lan"), Ok(()));
        assert!(matches!(
            validate_device_id(""),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            validate_device_id("a/b"),
            Err(NameError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            validate_device_id("pi 1"),
            Err(NameError::BadChar { bad: ' ', .. })
        ));
        assert!(matches!(
            validate_device_id(&"x".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        assert_eq!(validate_device_id(&"x".repeat(64)), Ok(()));
    }

    #[test]
    fn topics_end_in_a_slash_so_prefixes_do_not_collide() {
        assert_eq!(Target::All.topic().unwrap(), "all/");
        assert_eq!(
            Target::Group("north".into()).topic().unwrap(),
            "group/north/"
        );
        assert_eq!(Target::Device("pi-1".into()).topic().unwrap(), "dev/pi-1/");
        assert!(!"dev/pi-10/".starts_with(&device_topic("pi-1")));
        assert!(Target::Device("../x".into()).topic().is_err());
    }

    #[test]
    fn a_route_is_a_device_id_and_a_nonce() {
        let nonce = "0123456789abcdefABCDEF";
        assert_eq!(route_device(route("pi-1", nonce).as_bytes()), Ok("pi-1"));
        assert!(matches!(route_device(b"pi-1"), Err(RouteError::NoNonce(_))));
        assert!(matches!(
            route_device(route("a/b", nonce).as_bytes()),
            Err(RouteError::Device(NameError::BadChar { bad: '/', .. }))
        ));
        for bad in ["short", "0123456789abcdef!", &"x".repeat(65)] {
            assert!(
                matches!(
                    route_device(route("pi-1", bad).as_bytes()),
                    Err(RouteError::BadNonce(_))
                ),
                "{bad:?}"
            );
        }
        assert!(route_device(b"\xff@0123456789abcdef").is_err());
        assert_eq!(
            route_device(route("pi-1", &"x".repeat(16)).as_bytes()),
            Ok("pi-1")
        );
    }
}
