#![no_main]
//! Any bytes as a `Downstream` frame.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fleetmq_protocol_fuzz::check_channel!(fleetmq_protocol::Downstream, data);
});
