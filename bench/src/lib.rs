//! fleetmq's benchmark suite (`scripts/bench.sh`): what the hub ingests,
//! how fast a command goes round, what an idle agent costs, how small
//! the wire format is, and what one flooding device costs the others, each measured beside its baseline in the same run.

pub mod baseline;
pub mod fleet;
pub mod flood;
pub mod peers;
pub mod procstat;
pub mod run;
pub mod store;
pub mod swarm;
pub mod wire;

/// The `p`th percentile (nearest rank) of `sorted` times; `None` if there
/// are none.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> Option<std::time::Duration> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}
