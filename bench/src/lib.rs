//! fleetmq's benchmark suite (`scripts/bench.sh`): what the hub ingests,
//! how fast a command goes round, what an idle agent costs, how small
//! the wire format is, and what one flooding device costs the others, each measured beside its baseline in the same run.

pub mod fleet;
pub mod flood;
pub mod procstat;
pub mod run;
pub mod swarm;
pub mod wire;
