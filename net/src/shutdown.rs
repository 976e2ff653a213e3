//! SIGINT/SIGTERM (stop) and SIGHUP (reload) as file descriptors a poll
//! loop can wait on.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Becomes readable when SIGINT or SIGTERM arrives (or [`Shutdown::trigger`]
/// is called). A second SIGINT or SIGTERM while shutting down exits at once.
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    read: UnixStream,
    write: UnixStream,
}

impl Shutdown {
    /// Installs the signal handlers.
    pub fn install() -> std::io::Result<Self> {
        let (read, write) = wake_pair()?;
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Order matters: the conditional exit is checked before the flag
            // is set, so only a second signal exits at once.
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(Shutdown { flag, read, write })
    }

    /// The descriptor to poll for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// True once shutdown was asked for. Drains the wake-up bytes.
    pub fn requested(&self) -> bool {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
        self.flag.load(Ordering::SeqCst)
    }

    /// Asks for shutdown from inside the program.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // A full pipe already wakes the loop; nothing to do on error.
        let _ = (&self.write).write(&[1]);
    }
}

/// A non-blocking socketpair: signal handlers write a byte to one end, the
/// poll loop waits on the other.
fn wake_pair() -> std::io::Result<(UnixStream, UnixStream)> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    Ok((read, write))
}

/// Becomes readable when SIGHUP arrives: the conventional "reload your
/// configuration". Without it, SIGHUP would end the process.
pub struct Hangup {
    read: UnixStream,
}

impl Hangup {
    /// Installs the handler.
    pub fn install() -> std::io::Result<Self> {
        let (read, write) = wake_pair()?;
        signal_hook::low_level::pipe::register(SIGHUP, write)?;
        Ok(Hangup { read })
    }

    /// The descriptor to poll for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// True if SIGHUP came since the last call (any number of them count
    /// as one).
    pub fn take(&self) -> bool {
        let mut buf = [0u8; 64];
        let mut any = false;
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {
            any = true;
        }
        any
    }
}
