//! Builds libzmq 4.3.5 (zeromq-src) against the libsodium that
//! libsodium-sys-stable built, so the CURVE mechanism is compiled in, with
//! our own compile-time settings in place of libzmq's `config.hpp`, and
//! with changes to its source as it compiles (`build/source.rs`).

use std::{env, fs, path::PathBuf};

#[path = "build/source.rs"]
mod source;

/// Messages per allocation in a pipe between a socket and one connection.
/// libzmq's own 256 gives every pipe a 16 KB first chunk (256 `msg_t` of
/// 64 bytes), two pipes a connection and five connections a device: most
/// of what a hub holds per idle device. 8 makes a chunk 528 bytes. Under
/// load a pipe recycles its spare chunk, so it rarely allocates either
/// way; `scripts/bench.sh peers` measures ingest and memory beside NATS.
const MESSAGE_PIPE_GRANULARITY: u32 = 8;

/// A header force-included first in every libzmq translation unit (C++
/// only), with five changes to libzmq as zeromq-src builds it:
///
/// - **What Linux has.** libzmq's CMake build finds these and writes them
///   to `platform.hpp`; zeromq-src writes that file empty and defines only
///   a few, so libzmq ran without them: `SO_KEEPALIVE` and the
///   `TCP_KEEP*` options were never set, so `ZMQ_TCP_KEEPALIVE` did
///   nothing and a hub never noticed a device that lost power on its
///   quiet sockets (the connections stayed, five descriptors each);
///   libzmq's clock was the wall clock (`gettimeofday`), so its timers and
///   `zmq_poll` timeouts moved when a Pi without a real-time clock set its
///   time; each mailbox was a socket pair where one `eventfd` does, and
///   the descriptors it made could be inherited by programs the agent
///   runs. Every one of these is in Linux since 2.6.28 and in glibc and
///   musl.
/// - **Its compile-time settings.** libzmq's `config.hpp` holds them as one
///   enum in namespace `zmq`. This header takes `config.hpp`'s include
///   guard, so libzmq's copy is skipped, and gives the same values except
///   the pipe granularity. A libzmq that adds a setting fails to compile
///   here rather than running with it missing.
/// - **No iostreams.** libzmq builds a few strings (endpoint names, peer
///   credentials, a thread-name prefix) with `std::stringstream` and
///   `std::ostringstream`, only appending strings, characters and integers
///   and reading `str()`. That one use links libc++'s iostream and locale
///   code into a static agent, about a fifth of it. Here the real
///   `<sstream>` is included first, so the standard library keeps its
///   names, and then both names are defined to a small string builder
///   that does just those appends.
/// - **No WebSocket transport.** `ZMQ_HAVE_WS`, which zeromq-src
///   defines, is undefined; `build/source.rs` compiles the transport's
///   own files empty, and says why.
/// - **No demangler, on static builds** (`static_cxx`): libc++abi's
///   handler for an uncaught C++ exception names the exception's type
///   through `__cxa_demangle`, a large parser. A weak stand-in that says
///   "not a mangled name" makes the handler print the name as it is, so
///   the parser is never linked. libzmq reports errors by return codes and
///   aborts on broken invariants with its own message; this changes only
///   the wording of a crash that should not happen.
fn config_hpp(static_cxx: bool) -> String {
    let demangler = if static_cxx {
        r#"#include <cstddef>
extern "C" {
__attribute__ ((weak)) char *
__cxa_demangle (const char *, char *, std::size_t *, int *status_)
{
    if (status_)
        *status_ = -2;
    return 0;
}
}
"#
    } else {
        ""
    };
    format!(
        r#"#ifndef __ZMQ_CONFIG_HPP_INCLUDED__
#define __ZMQ_CONFIG_HPP_INCLUDED__
#ifdef __linux__
#define HAVE_CLOCK_GETTIME 1
#define ZMQ_HAVE_SO_KEEPALIVE 1
#define ZMQ_HAVE_TCP_KEEPCNT 1
#define ZMQ_HAVE_TCP_KEEPIDLE 1
#define ZMQ_HAVE_TCP_KEEPINTVL 1
#define ZMQ_HAVE_EVENTFD 1
#define ZMQ_HAVE_EVENTFD_CLOEXEC 1
#define ZMQ_HAVE_SOCK_CLOEXEC 1
#define HAVE_ACCEPT4 1
#define ZMQ_IOTHREAD_POLLER_USE_EPOLL_CLOEXEC 1
#endif
#undef ZMQ_HAVE_WS
#ifdef __cplusplus
#include <sstream>
#include <string>
#include <type_traits>
namespace fleetmq_zmq
{{
class text_t
{{
  public:
    text_t &operator<< (const std::string &s_)
    {{
        _text += s_;
        return *this;
    }}
    text_t &operator<< (const char *s_)
    {{
        _text += s_;
        return *this;
    }}
    text_t &operator<< (char c_)
    {{
        _text += c_;
        return *this;
    }}
    template <typename T>
    typename std::enable_if<std::is_integral<T>::value, text_t &>::type
    operator<< (T n_)
    {{
        _text += std::to_string (n_);
        return *this;
    }}
    std::string str () const {{ return _text; }}

  private:
    std::string _text;
}};
}}
namespace std
{{
typedef ::fleetmq_zmq::text_t fleetmq_zmq_text_t;
}}
#define stringstream fleetmq_zmq_text_t
#define ostringstream fleetmq_zmq_text_t
namespace zmq
{{
enum
{{
    message_pipe_granularity = {MESSAGE_PIPE_GRANULARITY},
    command_pipe_granularity = 16,
    inbound_poll_rate = 100,
    max_wm_delta = 1024,
    max_io_events = 256,
    proxy_burst_size = 1000,
    max_command_delay = 3000000,
    clock_precision = 1000000,
    signaler_port = 0
}};
}}
// A mark that this header was compiled in, read back by zmq-sys's
// `message_pipe_granularity()`: weak, so each file's copy is one symbol.
extern "C" {{
__attribute__ ((weak)) extern const int
  fleetmq_zmq_message_pipe_granularity = {MESSAGE_PIPE_GRANULARITY};
}}
{demangler}#endif
#endif
"#
    )
}

fn main() {
    if let Some(real) = env::var_os(source::WRAP) {
        // cc runs this program as its C++ compiler (see source.rs).
        source::compile(real);
    }
    let (Ok(lib), Ok(include)) = (env::var("DEP_SODIUM_LIB"), env::var("DEP_SODIUM_INCLUDE"))
    else {
        // Build scripts report failure by panicking; say what is missing.
        panic!(
            "libsodium-sys-stable did not report DEP_SODIUM_LIB / DEP_SODIUM_INCLUDE; CURVE needs its static libsodium"
        );
    };
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_LIB");
    println!("cargo:rustc-env=FLEETMQ_ZMQ_PIPE_GRANULARITY={MESSAGE_PIPE_GRANULARITY}");
    let out = PathBuf::from(
        env::var("OUT_DIR")
            .unwrap_or_else(|_| panic!("cargo did not set OUT_DIR for zmq-sys's build script")),
    );
    let config = out.join("fleetmq_zmq_config.hpp");
    // musl targets are the static builds, linked with libc++ and libc++abi.
    let static_cxx = env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "musl");
    if let Err(e) = fs::write(&config, config_hpp(static_cxx)) {
        panic!("writing {}: {e}", config.display());
    }
    // libzmq's own C++ warnings are not ours to fix; keep the build quiet.
    // cc takes a target's own CXXFLAGS_<target> before plain CXXFLAGS, so
    // ours go into whichever it will read.
    let target = env::var("TARGET").unwrap_or_default();
    let candidates = [
        format!("CXXFLAGS_{target}"),
        format!("CXXFLAGS_{}", target.replace('-', "_")),
        "TARGET_CXXFLAGS".to_string(),
        "CXXFLAGS".to_string(),
    ];
    for c in &candidates {
        println!("cargo:rerun-if-env-changed={c}");
    }
    let name = candidates
        .iter()
        .find(|c| env::var_os(c).is_some())
        .unwrap_or(&candidates[3])
        .clone();
    // No C++ exceptions, and no unwind tables for them: libzmq reports
    // errors by return codes, and catches only std::bad_alloc in two
    // files, which `build/source.rs` compiles without their `try`.
    let flags = format!(
        "{} -w -fno-exceptions -fno-asynchronous-unwind-tables -fno-unwind-tables -include {}",
        env::var(&name).unwrap_or_default(),
        config.display()
    );
    // SAFETY: a build script is single-threaded here; cc reads the flags.
    unsafe { env::set_var(&name, flags.trim_start()) };
    source::stand_in_for_cxx(&out);
    zeromq_src::Build::new()
        // The draft API: only the hub asks for it (per-connection buffer
        // sizes); it adds about 9 KB the agent has no use for.
        .enable_draft(env::var_os("CARGO_FEATURE_DRAFT").is_some())
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}
