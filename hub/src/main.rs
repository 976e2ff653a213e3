//! `fleetmq-hub`: the hub server and the operator's command line. The
//! command tree and everything it runs live in the library
//! ([`fleetmq_hub::cli`]); this file only starts it.

fn main() -> std::process::ExitCode {
    fleetmq_hub::cli::main()
}
