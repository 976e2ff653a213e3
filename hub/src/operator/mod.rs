//! The operator's side of the hub, apart from the hub loop: the command
//! line ([`cli`]), the Lazy Pirate client it and the HTTP side talk to the
//! hub through ([`client`]), how answers are shown ([`format`]), and the
//! HTTP side ([`http`]: the fleet page, `/metrics`, the JSON API).
//!
//! Nothing here touches the hub's state: every request travels over the
//! operator socket to the hub loop, as a remote script's would.

pub mod cli;
pub mod client;
pub mod format;
pub mod http;

pub use client::{Client, ClientError, find_endpoint};
