//! Local sources: what the agent reads on the device itself, apart from the
//! hub. What the device is, for the hub's inventory ([`facts`]), host
//! metrics ([`host`]), StatsD and Influx line protocol from local programs
//! ([`ingest`], StatsD folded per interval in [`statsd`]), log files
//! followed line by line ([`logs`]), and the control socket that
//! `fleetmq-agent status`, `send` and `reload` talk to ([`control`]).

pub mod control;
pub mod facts;
pub mod host;
pub mod ingest;
pub mod logs;
pub mod sample;
pub mod statsd;
