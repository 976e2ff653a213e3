//! Front-ends over a NATS JetStream cluster: what a hub shares with the
//! others when one hub is not enough. The only code that speaks NATS.
//!
//! A front-end holds some agents' ZeroMQ connections, as a single hub does,
//! and shares the rest through JetStream:
//!
//! | what | where | how |
//! |---|---|---|
//! | telemetry | stream `FLEETMQ_TELEMETRY`, subjects `fleetmq.telemetry.<device>` | a batch is acked to its agent once JetStream acked it at the stream's replication; its id `<device>/<seq>` stores a resent batch once within the dedupe window |
//! | the fleet's telemetry, queried | each front-end's own hub.db | every front-end reads the whole stream in order and stores it as a single hub does (idempotent by device and number), so queries, `/metrics` and chat see the whole fleet from anywhere |
//! | who holds which device | bucket `fleetmq_devices`, key = device id | written with compare-and-set; the newest connection of a device wins; an operator's `forget` marks it (`forgotten_ms`), every front-end forgets it, and its next connection clears the mark |
//! | the allow list | bucket `fleetmq_allow`, key = device id, value = its keys | every front-end's file mirrors it; an edit of any file goes to the bucket ([`allow`]) |
//! | commands for a device another front-end holds | core NATS request/reply to `fleetmq.frontend.<name>.ask` | the operator's request as it came; no responder: the device counts as offline |
//! | announcements for groups and the fleet | core NATS subject `fleetmq.broadcast` | each other front-end publishes it to its agents |
//! | work-queue jobs, and cancelling any job | work-queue stream `FLEETMQ_JOBS` (one consumer: ack wait = lease, deliveries = attempts) and `FLEETMQ_JOB_EVENTS` | see [`jobs`] |
//! | the desired configuration | stream `FLEETMQ_CONFIG`: edits and applied reports, applied in order by every front-end | see [`config`] |
//! | which front-ends live | bucket `fleetmq_frontends`, entries expire after [`FRONTEND_TTL_S`] | a device whose front-end is gone counts as offline |
//!
//! The message body is Influx line protocol ([`lines`]) for Telegraf's and
//! Vector's NATS inputs; the exact batch travels in the `Fleetmq-Batch`
//! header (base64 of its postcard body), which front-ends store.
//!
//! The loop talks to the cluster through [`Link`]: it hands over
//! [`ToCluster`] and polls a descriptor for [`FromCluster`].

pub mod allow;
pub mod config;
pub mod jobs;
pub mod lines;
mod link;

pub use link::{Link, LinkError};

use serde::{Deserialize, Serialize};

/// The telemetry stream.
pub const STREAM: &str = "FLEETMQ_TELEMETRY";
/// Subjects of the telemetry stream: `fleetmq.telemetry.<device>`.
pub const SUBJECT_PREFIX: &str = "fleetmq.telemetry.";
/// Who holds which device.
pub const DEVICES_BUCKET: &str = "fleetmq_devices";
/// Front-ends alive.
pub const FRONTENDS_BUCKET: &str = "fleetmq_frontends";
/// A front-end that has not said it lives for this long is gone, and so
/// are its devices (it says so every [`FRONTEND_BEAT_S`]).
pub const FRONTEND_TTL_S: u64 = 15;
pub const FRONTEND_BEAT_S: u64 = 5;

/// The subject a front-end answers operator requests on.
pub fn ask_subject(frontend: &str) -> String {
    format!("fleetmq.frontend.{frontend}.ask")
}

/// The subject announcements go to every front-end on (core NATS: a
/// front-end that is not connected then misses it).
pub const BROADCAST_SUBJECT: &str = "fleetmq.broadcast";
/// Headers on a broadcast: the topic, and the front-end it came from.
pub const HEADER_TOPIC: &str = "Fleetmq-Topic";
pub const HEADER_FROM: &str = "Fleetmq-From";

/// Headers on a telemetry message.
pub const HEADER_DEVICE: &str = "Fleetmq-Device";
pub const HEADER_SEQ: &str = "Fleetmq-Seq";
pub const HEADER_BATCH: &str = "Fleetmq-Batch";

/// Whether `name` can name a front-end (it is part of keys and subjects).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// This front-end's name: `configured`, or the host name made valid.
pub fn front_end_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() { "hub".into() } else { name }
}

/// A batch's id on the stream: JetStream stores a message with an id it
/// has seen within the dedupe window once.
pub fn batch_id(device: &str, seq: u64) -> String {
    format!("{device}/{seq}")
}

/// Who holds a device, as kept in [`DEVICES_BUCKET`] (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// The front-end holding (or last holding) the device.
    pub frontend: String,
    /// Whether it is online there.
    pub online: bool,
    /// Wall clock ms of the last change.
    pub since_ms: u64,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub arch: String,
    /// Groups from its last Hello (for commands to groups from anywhere).
    #[serde(default)]
    pub groups: Vec<String>,
    /// When an operator forgot the device (`fleetmq-hub forget`): every
    /// front-end forgets it in its own store. Its next connection, at any
    /// front-end, writes a holder without it, and every front-end
    /// remembers the device again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_ms: Option<u64>,
    /// What the device's newest Offer said it is, written by the
    /// front-end holding it when they change (absent until then, and
    /// from a release before facts).
    #[serde(
        default,
        skip_serializing_if = "fleetmq_protocol::DeviceFacts::is_empty"
    )]
    pub facts: fleetmq_protocol::DeviceFacts,
}

impl Holder {
    /// Whether an operator forgot the device (and it has not been back).
    pub fn forgotten(&self) -> bool {
        self.forgotten_ms.is_some()
    }

    /// `held` (or, for a device no front-end has held, an empty holder)
    /// marked forgotten at `now_ms`: offline, held by nobody.
    pub fn forgotten_now(held: Option<&Holder>, now_ms: u64) -> Holder {
        let said = held.map(Said::of).unwrap_or_default();
        Holder {
            frontend: String::new(),
            online: false,
            since_ms: held.map_or(now_ms, |h| h.since_ms),
            version: said.version,
            arch: said.arch,
            groups: said.groups,
            forgotten_ms: Some(now_ms),
            facts: fleetmq_protocol::DeviceFacts::default(),
        }
    }
}

fn now_ms() -> u64 {
    fleetmq_net::now_ms()
}

/// The holder to write when `device` came online (or went offline) at
/// front-end `me`, given the holder in the bucket: `None` to leave it.
/// The newest connection of a device wins (its key was checked by the
/// front-end it reached); going offline changes only what `me` holds,
/// and never undoes a forgetting (only a connection does).
pub fn next_holder(
    held: Option<&Holder>,
    me: &str,
    online: bool,
    said: Option<&Said>,
    now_ms: u64,
) -> Option<Holder> {
    let mine = held.is_some_and(|h| h.frontend == me && !h.forgotten());
    if !online && !mine {
        return None;
    }
    let said = match (held, said) {
        // Offline, or online again without a Hello: what it said before.
        (Some(h), _) if !online => Said::of(h),
        (Some(h), None) => Said::of(h),
        (_, Some(s)) => s.clone(),
        (None, None) => Said::default(),
    };
    Some(Holder {
        frontend: me.to_string(),
        online,
        since_ms: now_ms,
        version: said.version,
        arch: said.arch,
        groups: said.groups,
        forgotten_ms: None,
        // Facts change only with an Offer (ToCluster::Facts).
        facts: held.map(|h| h.facts.clone()).unwrap_or_default(),
    })
}

/// The holder to write when `device`, held at front-end `me`, says it is
/// `facts` now: `None` to leave it (no holder, another front-end's, a
/// forgotten one, or the same facts).
pub fn with_facts(
    held: Option<&Holder>,
    me: &str,
    facts: &fleetmq_protocol::DeviceFacts,
) -> Option<Holder> {
    let h = held.filter(|h| h.frontend == me && !h.forgotten() && h.facts != *facts)?;
    Some(Holder {
        facts: facts.clone(),
        ..h.clone()
    })
}

/// What a device said of itself in its last Hello, as a holder keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Said {
    pub version: String,
    pub arch: String,
    pub groups: Vec<String>,
}

impl Said {
    fn of(h: &Holder) -> Said {
        Said {
            version: h.version.clone(),
            arch: h.arch.clone(),
            groups: h.groups.clone(),
        }
    }
}

/// Where this front-end's store has read each stream to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub telemetry: u64,
    pub job_events: u64,
    pub config: u64,
}

/// What the loop asks of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum ToCluster {
    /// Put a batch on the stream; answered with [`FromCluster::Replicated`].
    /// The link writes it as line protocol on its own thread, off the
    /// loop.
    Batch {
        device: String,
        batch: fleetmq_protocol::Batch,
        /// Its postcard body, as stored.
        body: Vec<u8>,
    },
    /// `device` came online here.
    Online {
        device: String,
        version: String,
        arch: String,
        groups: Vec<String>,
    },
    /// `device` went offline here.
    Offline { device: String },
    /// What `device`, held here, says it is changed (its Offer): written
    /// into its holder for every front-end.
    Facts {
        device: String,
        facts: fleetmq_protocol::DeviceFacts,
    },
    /// Ask front-end `frontend` to answer an operator request (`frame`,
    /// as the operator sent it) for a device it holds; the answer comes
    /// back as [`FromCluster::Answered`] for `client`.
    Ask {
        frontend: String,
        client: Vec<u8>,
        frame: Vec<u8>,
        timeout_ms: u64,
    },
    /// The answer to [`FromCluster::Asked`] `id`.
    Answer { id: u64, frame: Vec<u8> },
    /// An announcement for a group or the fleet, for every other
    /// front-end's agents (this one published it to its own).
    Broadcast { topic: String, frame: Vec<u8> },
    /// Record a new job (`Submitted` for the work queue, or `Aimed`) and
    /// queue a work-queue one; answered with [`FromCluster::JobSubmitted`]
    /// for the operator's request.
    SubmitJob {
        client: Vec<u8>,
        request_id: u64,
        event: jobs::JobEvent,
    },
    /// This front-end has an agent free: take one job from the queue
    /// ([`FromCluster::Job`], or [`FromCluster::NoJob`]).
    WantJob,
    /// The job taken as `handle` is over: acknowledge it, and tell every
    /// front-end `event` (a [`jobs::JobEvent`]).
    JobDone { handle: u64, event: Vec<u8> },
    /// Give the job taken as `handle` back (delivered again, elsewhere).
    JobBack { handle: u64 },
    /// The job taken as `handle` failed for good: stop delivering it,
    /// and tell every front-end `event` if there is one (none for a job
    /// every store shows ended already, such as one cancelled).
    JobEnd { handle: u64, event: Option<Vec<u8>> },
    /// Tell every front-end what became of an aimed job's run (a
    /// [`jobs::JobEvent`]), in the order told.
    JobEvent { event: Vec<u8> },
    /// Put an operator's cancel (a `Cancelled` [`jobs::JobEvent`]) on the
    /// job events; if the cluster does not take it, say so with
    /// [`FromCluster::CancelNotTaken`] `ask`.
    Cancel { event: Vec<u8>, ask: u64 },
    /// Put an event (a [`config::ConfigEvent`]) on the configuration stream.
    Config { event: Vec<u8> },
    /// Enrol `device` with exactly these keys (none: revoke it).
    Enrol { device: String, keys: Vec<String> },
    /// Mark `device` forgotten in the holders bucket, unless it is online
    /// at a live front-end (compare-and-set: a connection in between
    /// wins); answered with [`FromCluster::Forgot`] `ask`.
    Forget { device: String, ask: u64 },
    /// This front-end's own traffic now (JSON of a `FrontEndStats`), for
    /// its entry in the front-ends bucket: every front-end's `stats` shows
    /// it.
    Report { report: Vec<u8> },
    /// The loop has not taken everything the stream gave: wake it again.
    Poke,
    /// The hub is stopping.
    Stop,
}

/// What JetStream said of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicated {
    /// Stored at the stream's replication.
    Stored,
    /// Stored before (its id is within the dedupe window).
    Duplicate,
    /// Not taken: why.
    Failed(String),
}

/// What the cluster tells the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum FromCluster {
    Replicated {
        device: String,
        seq: u64,
        outcome: Replicated,
    },
    /// Batches read from the stream, in its order: (device, postcard body),
    /// and the stream sequence of the last one.
    Stream {
        batches: Vec<(String, Vec<u8>)>,
        last: u64,
    },
    /// Who holds `device` now (`None`: nobody is recorded).
    Holder {
        device: String,
        holder: Option<Holder>,
    },
    /// The front-ends alive now (every few seconds), each with its last
    /// report of its own traffic (see [`ToCluster::Report`]).
    FrontEnds(Vec<(String, Vec<u8>)>),
    /// Another front-end asks this one an operator request (`frame`);
    /// answer with [`ToCluster::Answer`] `id`.
    Asked { id: u64, frame: Vec<u8> },
    /// The answer of the front-end asked for `client`.
    Answered { client: Vec<u8>, frame: Vec<u8> },
    /// No front-end answered for `client` (none holds the device now).
    Unanswered {
        client: Vec<u8>,
        frame: Vec<u8>,
        why: String,
    },
    /// The cluster did not take the cancel asked as `ask`: why.
    CancelNotTaken { ask: u64, why: String },
    /// The queue took a job: its id, or why not.
    JobSubmitted {
        client: Vec<u8>,
        request_id: u64,
        outcome: Result<u64, String>,
    },
    /// A job from the queue: its id, which delivery this is, and its
    /// submission (JSON).
    Job {
        handle: u64,
        id: u64,
        attempt: u32,
        submission: Vec<u8>,
    },
    /// The queue had no job.
    NoJob,
    /// Configuration events, in order: (stream sequence, event).
    ConfigEvents {
        events: Vec<(u64, Vec<u8>)>,
        last: u64,
    },
    /// Job events, in order, and the stream sequence of the last.
    JobEvents {
        events: Vec<(u64, Vec<u8>)>,
        last: u64,
    },
    /// The allow list bucket as it is (at start, and after the watch
    /// was lost); empty when the bucket is.
    EnrolledAll(allow::Enrolled),
    /// One device's keys changed (none: revoked).
    EnrolledOne { device: String, keys: Vec<String> },
    /// What became of [`ToCluster::Forget`] `ask`: the holder written, or
    /// why none was.
    Forgot {
        ask: u64,
        device: String,
        outcome: Result<Holder, String>,
    },
    /// An announcement another front-end's operator made: publish it to
    /// this front-end's agents.
    Broadcast { topic: String, frame: Vec<u8> },
    /// The connection to NATS: `None` when it works, else why not.
    Connection(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(frontend: &str, online: bool) -> Holder {
        Holder {
            frontend: frontend.into(),
            online,
            since_ms: 1,
            version: "0.1.0".into(),
            arch: "aarch64".into(),
            groups: vec!["north".into()],
            forgotten_ms: None,
            facts: fleetmq_protocol::DeviceFacts::default(),
        }
    }

    #[test]
    fn the_newest_connection_takes_a_device_and_only_its_holder_lets_it_go() {
        let hello = Said {
            version: "0.2.0".into(),
            arch: "armv6".into(),
            groups: vec!["south".into()],
        };
        let taken = next_holder(Some(&holder("a", true)), "b", true, Some(&hello), 9).unwrap();
        assert_eq!((taken.frontend.as_str(), taken.online), ("b", true));
        assert_eq!(
            (taken.version.as_str(), taken.arch.as_str()),
            ("0.2.0", "armv6")
        );
        assert_eq!(taken.groups, vec!["south".to_string()]);
        // a hears of the device's silence after b took it: a changes nothing.
        assert_eq!(next_holder(Some(&taken), "a", false, None, 10), None);
        let gone = next_holder(Some(&taken), "b", false, None, 11).unwrap();
        assert_eq!((gone.online, gone.version.as_str()), (false, "0.2.0"));
        assert_eq!(next_holder(None, "a", false, None, 1), None);
    }

    #[test]
    fn online_again_without_a_hello_keeps_what_it_said() {
        let back = next_holder(Some(&holder("a", false)), "b", true, None, 5).unwrap();
        assert_eq!(
            (back.version.as_str(), back.arch.as_str(), back.online),
            ("0.1.0", "aarch64", true)
        );
        assert_eq!(back.groups, vec!["north".to_string()]);
    }

    #[test]
    fn facts_follow_the_device_between_front_ends_and_go_when_it_is_forgotten() {
        let facts = fleetmq_protocol::DeviceFacts {
            kernel: "6.6.31".into(),
            ..Default::default()
        };
        let told = with_facts(Some(&holder("a", true)), "a", &facts).unwrap();
        assert_eq!((told.facts.kernel.as_str(), told.online), ("6.6.31", true));
        assert_eq!(with_facts(Some(&told), "a", &facts), None, "the same again");
        assert_eq!(
            with_facts(Some(&told), "b", &facts),
            None,
            "only its holder"
        );
        assert_eq!(with_facts(None, "a", &facts), None);
        let taken = next_holder(Some(&told), "b", true, None, 9).unwrap();
        assert_eq!(taken.facts, facts, "kept until its Offer at b");
        let json = serde_json::to_value(&taken).unwrap();
        assert_eq!(json["facts"]["kernel"], "6.6.31");
        assert!(
            serde_json::to_value(holder("a", true))
                .unwrap()
                .get("facts")
                .is_none(),
            "no facts, no field"
        );
        let gone = Holder::forgotten_now(Some(&taken), 20);
        assert_eq!(gone.facts, fleetmq_protocol::DeviceFacts::default());
    }

    #[test]
    fn a_forgotten_device_stays_forgotten_until_it_connects() {
        let gone = Holder::forgotten_now(Some(&holder("a", false)), 20);
        assert!(gone.forgotten() && !gone.online);
        assert_eq!(gone.groups, vec!["north".to_string()], "what it said stays");
        // Its old front-end hears of its silence late: nothing changes.
        assert_eq!(next_holder(Some(&gone), "a", false, None, 21), None);
        assert_eq!(next_holder(Some(&gone), "", false, None, 21), None);
        // It connects again (enrolled again): remembered, anywhere.
        let back = next_holder(Some(&gone), "b", true, None, 22).unwrap();
        assert!(!back.forgotten() && back.online);
        assert_eq!(back.frontend, "b");
        // The JSON of a holder never forgotten is as older front-ends wrote it.
        let json = serde_json::to_string(&holder("a", true)).unwrap();
        assert!(!json.contains("forgotten"), "{json}");
        let old: Holder = serde_json::from_str(&json).unwrap();
        assert!(!old.forgotten());
    }

    #[test]
    fn names_and_ids() {
        assert!(valid_name("fe-1_a"));
        assert!(!valid_name("fe.1") && !valid_name("") && !valid_name(&"x".repeat(65)));
        assert_eq!(batch_id("pi.1", 42), "pi.1/42");
    }
}
