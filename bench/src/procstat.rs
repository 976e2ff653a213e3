//! CPU time, resident memory and open files of a process, from /proc, and
//! this process's open-files limit.

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields
    // after the last ')'. utime and stime are fields 14 and 15 of the line,
    // so the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// The part of the RSS that is the process's own (heap, stacks), not pages
/// of files it maps (its binary, shared libraries), in bytes.
pub fn rss_anon_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "RssAnon:").map(|kb| kb * 1024)
}

/// A "Key:   N kB" line of /proc/PID/status.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Descriptors the process has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Raises this process's open-files limit (which children inherit) to at
/// least `want` if it can: the soft limit up to the hard one, and the hard
/// one too when privileged. Returns the soft limit now in force.
pub fn raise_open_files(want: u64) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Unprivileged: as far as the hard limit goes.
    let soft = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim.rlim_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 100_000);
        assert!(rss_anon_bytes(me).unwrap() > 0);
        assert!(rss_anon_bytes(me).unwrap() < rss_bytes(me).unwrap());
        let spent: u64 = (0..3_000_000u64).map(|i| i.wrapping_mul(i) % 7).sum();
        assert!(spent > 0);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }

    /// Descriptors a shell holds once it ran `redirections`, counted
    /// while it waits on its stdin after saying so. The child starts with
    /// stdin, stdout and stderr only: a descriptor another test opened at
    /// the moment of the fork without close-on-exec (libzmq's, say) is
    /// closed before `sh` runs. (Counting a freshly exec'd program instead
    /// races with its dynamic loader, which opens libraries.)
    fn fds_of_shell_after(redirections: &str) -> Option<usize> {
        use std::io::BufRead as _;
        use std::os::unix::process::CommandExt as _;
        use std::process::Stdio;
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &format!("{redirections} echo ready; read x")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: close_range is a plain system call, safe between fork
        // and exec; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::close_range(3, libc::c_uint::MAX, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut said = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut said)
            .unwrap();
        assert_eq!(said, "ready\n");
        let counted = open_fds(child.id());
        drop(child.stdin.take()); // read sees the end, and sh exits
        child.wait().unwrap();
        counted
    }

    #[test]
    fn open_files_are_counted_and_the_limit_is_at_least_what_is_open() {
        // Processes of our own, the second with two descriptors more (this
        // process's are in flux: other tests open and close theirs).
        let plain = fds_of_shell_after("").unwrap();
        let two_more = fds_of_shell_after("exec 3</dev/null 4</dev/null;").unwrap();
        assert_eq!(plain, 3, "stdin, stdout and stderr");
        assert_eq!(two_more, plain + 2);
        // Asking for no more than is in force changes nothing.
        let open = open_fds(std::process::id()).unwrap() as u64;
        assert!(raise_open_files(open).unwrap() >= open);
    }
}
