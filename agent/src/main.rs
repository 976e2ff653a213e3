//! `fleetmq-agent`: the device side of fleetmq. Everything it does lives in
//! the library ([`fleetmq_agent::start`]); this file only starts it.

fn main() -> std::process::ExitCode {
    fleetmq_agent::start::main()
}
