//! The operator's side of the hub, apart from the hub loop: the Lazy
//! Pirate client that the command line ([`crate::cli`]) and the HTTP side
//! talk to the hub through ([`client`]), how answers are shown to people
//! ([`format`](mod@format)), and the HTTP side ([`http`]: the fleet page, `/metrics`,
//! the JSON API), and how answers look as JSON to both ([`views`]).
//!
//! Nothing here touches the hub's state: every request travels over the
//! operator socket to the hub loop, as a remote script's would.

pub mod client;
pub mod format;
pub mod http;
pub mod views;

pub use client::{Client, ClientError, find_endpoint};

/// Why an edit of the desired configuration is likely a typo, if it is:
/// it sets a key agents of this release do not take from the hub. The
/// command line and the page refuse such an edit unless told to force it
/// (for agents newer than this hub).
pub fn unknown_config_key<'k>(mut keys: impl Iterator<Item = &'k str>) -> Option<String> {
    let key = keys.find(|k| !fleetmq_protocol::is_config_key(k))?;
    Some(format!(
        "{key:?} is not a key agents of this release take from the hub (a typo?); \
         they take {} and app.NAME. For a key only agents newer than this hub take, force it",
        fleetmq_protocol::CONFIG_KEYS.join(", ")
    ))
}
