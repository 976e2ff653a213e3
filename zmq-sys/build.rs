//! Builds libzmq 4.3.5 (zeromq-src) against the libsodium that
//! libsodium-sys-stable built, so the CURVE mechanism is compiled in.

use std::env;

fn main() {
    let (Ok(lib), Ok(include)) = (env::var("DEP_SODIUM_LIB"), env::var("DEP_SODIUM_INCLUDE"))
    else {
        // Build scripts report failure by panicking; say what is missing.
        panic!(
            "libsodium-sys-stable did not report DEP_SODIUM_LIB / DEP_SODIUM_INCLUDE; CURVE needs its static libsodium"
        );
    };
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_LIB");
    // libzmq's own C++ warnings are not ours to fix; keep the build quiet.
    let flags = env::var("CXXFLAGS")
        .map(|f| format!("{f} -w"))
        .unwrap_or_else(|_| "-w".into());
    // SAFETY: a build script is single-threaded here; cc reads CXXFLAGS.
    unsafe { env::set_var("CXXFLAGS", flags) };
    zeromq_src::Build::new()
        // The draft API: only the hub asks for it (per-connection buffer
        // sizes); it adds about 9 KB the agent has no use for.
        .enable_draft(env::var_os("CARGO_FEATURE_DRAFT").is_some())
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}
