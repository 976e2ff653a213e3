//! Changes to libzmq's source, made while zeromq-src compiles it.
//!
//! zeromq-src compiles its own copy of the source, so the changes are made
//! by standing in for the C++ compiler: the build script points cc at
//! itself, and when it is run with [`WRAP`] set it is that compiler. It
//! runs the real one (the one cc would have picked, zig's included) with
//! the same arguments, except for the files below, which are replaced by
//! copies in `OUT_DIR`. Their includes are still found (zeromq-src passes
//! `-I .../src`), and every flag and define is the one zeromq-src chose.
//! If libzmq's text is not what a change expects, the build stops and
//! says so.
//!
//! - **An accepted connection's pipe to the ZAP handler closes once its
//!   handshake is over** (`session_base.cpp`). Each CURVE connection a
//!   socket accepts asks the ZAP handler (the hub's allow list) about its
//!   key through a pipe pair libzmq opens for it, and libzmq kept that
//!   pair until the connection ended, though ZMTP 3 never asks again: with
//!   the handler's side of it, 3 KB of the 19.9 KB a hub held for an idle
//!   device on CURVE (16.9 KB without it; `fleetmq-bench connected
//!   --curve`). `session_base_t::engine_ready`, which libzmq calls when a
//!   handshake (and with it the ZAP exchange) has succeeded, now starts
//!   that pipe's termination, as a failed handshake already did. Only on
//!   the side that accepted the connection: a connecting session outlives
//!   its connections and may ask again on the next, and a raw socket ends
//!   its session with any of its pipes.
//! - **No C++ exceptions** (`ctx.cpp`, `socket_poller.cpp`). libzmq is
//!   compiled with `-fno-exceptions` and without unwind tables
//!   (`build.rs`): it reports errors by return codes, and only these two
//!   files catch anything, a `std::bad_alloc` from a container growing,
//!   which they turn into `ENOMEM`. Their `try` blocks become plain blocks
//!   and the handlers are never entered, so running out of memory there
//!   ends the process ("terminating due to uncaught exception"), as it
//!   does in Rust code, which aborts. The unwind tables, the handlers'
//!   tables and the cleanup code exceptions needed were 91 KB of the
//!   static aarch64 agent and 28 KB of each 32-bit one
//!   (`targets/README.md`).
//! - **No WebSocket transport** (the `ws_*.cpp` files compile to nothing).
//!   zeromq-src turns `ws://` on; fleetmq speaks `tcp://`, and `ipc://`
//!   for a hub's local sockets, only. The settings header turns
//!   `ZMQ_HAVE_WS` off, so nothing refers to the WebSocket listener,
//!   connecter and engine or to the SHA-1 their handshake uses; those
//!   files do not compile without it (one uses the ws address whatever
//!   the setting), so they are compiled empty.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::{env, fs, process};

/// Set (to the real compiler's path) when this program runs as cc's C++
/// compiler.
pub const WRAP: &str = "FLEETMQ_ZMQ_SYS_REAL_CXX";
/// Where the changed sources go (the build script's `OUT_DIR`).
const PATCH_DIR: &str = "FLEETMQ_ZMQ_SYS_PATCH_DIR";

/// The WebSocket transport's files, compiled empty.
const WEBSOCKET: [&str; 6] = [
    "ws_address.cpp",
    "ws_connecter.cpp",
    "ws_decoder.cpp",
    "ws_encoder.cpp",
    "ws_engine.cpp",
    "ws_listener.cpp",
];

/// The files that catch an exception, and how many times: each catches
/// `std::bad_alloc` from a container's growth and returns `ENOMEM`.
const TRIES: [(&str, usize); 2] = [("ctx.cpp", 1), ("socket_poller.cpp", 2)];

/// A `try` block's start, and its handler's, as those files write them.
const TRY: &str = "    try {\n";
const CATCH: &str = "    catch (const std::bad_alloc &) {\n";

/// What the ZAP pipe change looks for: the start of `engine_ready`'s body.
const ANCHOR: &str = "void zmq::session_base_t::engine_ready ()\n{\n";

/// What goes after it.
const CLOSE_ZAP_PIPE: &str =
    "    //  fleetmq: the handshake, and with it the ZAP exchange, is over; the
    //  pipe to the ZAP handler would otherwise last as long as the
    //  connection (see zmq-sys/build/source.rs).
    if (_zap_pipe && !_active && !options.raw_socket)
        _zap_pipe->terminate (false);

";

/// A mark that the changed source was compiled in, read back by zmq-sys's
/// `zap_pipe_closes()`.
const MARK: &str = "
extern \"C\" {
extern const int fleetmq_zmq_zap_pipe_closes = 1;
}
";

/// Points cc at this program as the C++ compiler for the rest of the
/// build script's run, remembering the compiler cc would have used.
pub fn stand_in_for_cxx(out: &Path) {
    let real = cc::Build::new()
        .cpp(true)
        .get_compiler()
        .path()
        .to_path_buf();
    let me = env::current_exe().unwrap_or_else(|e| {
        panic!("finding zmq-sys's build script to stand in for the C++ compiler: {e}")
    });
    let target = env::var("TARGET").unwrap_or_default();
    // SAFETY: a build script is single-threaded here; cc reads these.
    unsafe {
        env::set_var(WRAP, &real);
        env::set_var(PATCH_DIR, out);
        // cc takes CXX_<target> before every other spelling.
        env::set_var(format!("CXX_{target}"), &me);
        env::set_var(format!("CXX_{}", target.replace('-', "_")), &me);
    }
}

/// Runs as the C++ compiler `real`: the real one, with the libzmq files
/// this module changes replaced by their changed copies. Exits with its
/// status.
pub fn compile(real: OsString) -> ! {
    let mut args: Vec<OsString> = env::args_os().skip(1).collect();
    for arg in &mut args {
        if let Some(copy) = changed(Path::new(arg.as_os_str())) {
            *arg = copy.into_os_string();
        }
    }
    let status = process::Command::new(&real)
        .args(&args)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "running the C++ compiler {}: {e}",
                Path::new(&real).display()
            )
        });
    process::exit(status.code().unwrap_or(1));
}

/// The changed copy to compile in place of `source`, if it is a libzmq
/// file this module changes.
fn changed(source: &Path) -> Option<PathBuf> {
    let in_src = source
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "src");
    let name = source.file_name()?.to_str()?;
    if !in_src {
        return None;
    }
    let text = if name == "session_base.cpp" {
        zap_pipe_closes(source)
    } else if let Some((_, tries)) = TRIES.iter().find(|(file, _)| *file == name) {
        without_exceptions(source, *tries)
    } else if WEBSOCKET.contains(&name) {
        "// fleetmq: no WebSocket transport (see zmq-sys/build/source.rs).\n".to_string()
    } else {
        return None;
    };
    let dir = env::var_os(PATCH_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{PATCH_DIR} is not set for the C++ compiler stand-in"));
    let copy = dir.join(name);
    fs::write(&copy, text).unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));
    Some(copy)
}

/// `session_base.cpp` with the ZAP pipe closed after the handshake.
fn zap_pipe_closes(original: &Path) -> String {
    let text = fs::read_to_string(original)
        .unwrap_or_else(|e| panic!("reading libzmq's {}: {e}", original.display()));
    if text.matches(ANCHOR).count() != 1 {
        panic!(
            "libzmq's {} no longer starts engine_ready as zmq-sys/build/source.rs expects; \
             check that the ZAP pipe is still kept after the handshake and move the change",
            original.display()
        );
    }
    text.replacen(ANCHOR, &format!("{ANCHOR}{CLOSE_ZAP_PIPE}"), 1) + MARK
}

/// A file of [`TRIES`] compiled without exceptions: each `try` block is a
/// plain block, and its `std::bad_alloc` handler is never entered. Out of
/// memory there then ends the process, as it does in Rust code.
fn without_exceptions(original: &Path, tries: usize) -> String {
    let text = fs::read_to_string(original)
        .unwrap_or_else(|e| panic!("reading libzmq's {}: {e}", original.display()));
    if text.matches(TRY).count() != tries || text.matches(CATCH).count() != tries {
        panic!(
            "libzmq's {} no longer has {tries} `try` block(s) catching std::bad_alloc as \
             zmq-sys/build/source.rs expects; it is compiled with -fno-exceptions, so \
             check its exception handling and change the patch",
            original.display()
        );
    }
    text.replace(TRY, "    {\n")
        .replace(CATCH, "    if (false) {\n")
}
