//! The fleetmq wire format, shared by the agent and the hub.
//!
//! This crate does no I/O and knows nothing of ZeroMQ sockets: it defines the
//! messages, how each is framed, and the names that route them.
//!
//! * [`envelope`]: every message frame is `[version u8][kind u8][postcard body]`.
//!   The version byte lives outside postcard so a peer can refuse a version it
//!   does not speak before it tries to decode anything.
//! * [`messages`]: one enum per socket pair (a *channel*), e.g. [`Upstream`] for
//!   what an agent's DEALER sends to the hub's ROUTER. Decoding a frame on the
//!   wrong channel is a typed error, not a mis-parse.
//! * [`operator`]: what an operator asks the hub and the answers, carried
//!   by the operator channel.
//! * [`telemetry`]: the compact batch of samples and chat lines, with a builder
//!   that interns metric names and stores timestamps as offsets.
//! * [`names`]: device ids, group names and broadcast topic prefixes.
//! * [`facts`] and [`matching`]: the bounds of what a device says it is,
//!   and the filters (`model~zero`) that aim work by it.
//!
//! `PROTOCOL.md` beside this crate documents every byte for writers of clients
//! in other languages.
//!
//! ```
//! use fleetmq_protocol::{Ack, Downstream};
//!
//! let frame = Downstream::from(Ack { seq: 7 }).encode().expect("encodes");
//! assert_eq!(frame, [2, 0x11, 7]);
//! assert_eq!(Downstream::decode(&frame), Ok(Downstream::Ack(Ack { seq: 7 })));
//! ```
#![deny(missing_docs)]

pub mod envelope;
pub mod facts;
pub mod growable;
pub mod matching;
pub mod messages;
pub mod names;
pub mod operator;
pub mod telemetry;

pub use envelope::{DecodeError, EncodeError, VERSION};
pub use facts::{FACTS_MAX_ADDRESSES, FACTS_MAX_INTERFACES, FACTS_MAX_TEXT};
pub use matching::{MATCHING_MAX, Matcher};
pub use messages::*;
pub use names::{
    CONFIG_KEYS, NameError, RouteError, Target, is_config_key, route, route_device,
    validate_device_id, validate_group, validate_operator_name,
};
pub use operator::*;
pub use telemetry::{
    Batch, BatchBuilder, BatchError, ChatLine, LogBatch, LogLine, Sample, Value, stored_batch,
};
