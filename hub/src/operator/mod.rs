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
