//! fleetmq's benchmark suite (`scripts/bench.sh`): what the hub ingests,
//! how fast a command goes round, what an idle agent costs, and how small
//! the wire format is, each measured beside its baseline in the same run.

pub mod fleet;
pub mod procstat;
pub mod run;
pub mod swarm;
pub mod wire;
