#![no_main]
//! The agent's spool segment scanner: bytes from disk (a torn write, a
//! damaged card) never panic it, and what it calls valid lies within them.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scan = fleetmq_agent::telemetry::spool::scan_segment(data);
    assert!(scan.valid <= data.len() as u64);
});
