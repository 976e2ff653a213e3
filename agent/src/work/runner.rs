//! Running programs for exec jobs and commands: only allow-listed names,
//! arguments as a vector (never a shell), a time limit, and capped output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleetmq_protocol::{Outcome, Output};
use wait_timeout::ChildExt;

/// What exec may do.
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    /// Exact program names or absolute paths that may run.
    pub programs: Vec<String>,
    /// Longest run, and the limit when a request gives none.
    pub max_timeout: Duration,
    /// Bytes kept from each of stdout and stderr.
    pub max_output: usize,
}

/// How long a stopping agent waits between checks on a running child.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long to wait for output pipes after the child is gone (a grandchild
/// may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(1);

fn read_capped(
    mut from: impl Read + Send + 'static,
    cap: usize,
) -> mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    // Keep reading past the cap so the child never blocks on a full pipe.
                    truncated |= n > room;
                }
            }
        }
        let _ = tx.send((kept, truncated));
    });
    rx
}

/// Runs `program` with `args` if the policy allows it. `timeout` of zero
/// means the policy's limit; larger values are capped to it. `stop` kills
/// the child early (agent shutdown).
pub fn exec(
    policy: &ExecPolicy,
    program: &str,
    args: &[String],
    timeout: Duration,
    stop: &Arc<AtomicBool>,
) -> Outcome {
    if !policy.programs.iter().any(|p| p == program) {
        return Outcome::NotAllowed(format!("program {program:?}"));
    }
    let timeout = if timeout.is_zero() {
        policy.max_timeout
    } else {
        timeout.min(policy.max_timeout)
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("could not start {program:?}: {e}")),
    };
    let out_rx = child
        .stdout
        .take()
        .map(|s| read_capped(s, policy.max_output));
    let err_rx = child
        .stderr
        .take()
        .map(|s| read_capped(s, policy.max_output));
    let deadline = started + timeout;
    let mut timed_out = false;
    let status = loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::SeqCst) {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        match child.wait_timeout((deadline - now).min(STOP_CHECK)) {
            Ok(Some(status)) => break Some(status),
            Ok(None) => continue,
            Err(e) => return Outcome::Failed(format!("waiting for {program:?}: {e}")),
        }
    };
    let collect = |rx: Option<mpsc::Receiver<(Vec<u8>, bool)>>| {
        rx.and_then(|rx| rx.recv_timeout(PIPE_GRACE).ok())
            .unwrap_or_default()
    };
    let (stdout, t1) = collect(out_rx);
    let (stderr, t2) = collect(err_rx);
    let output = Output {
        exit_code: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        truncated: t1 || t2,
        duration_ms: started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32,
    };
    if timed_out {
        Outcome::TimedOut(output)
    } else {
        Outcome::Completed(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(programs: &[&str]) -> ExecPolicy {
        ExecPolicy {
            programs: programs.iter().map(|s| s.to_string()).collect(),
            max_timeout: Duration::from_secs(5),
            max_output: 16,
        }
    }

    fn no_stop() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[test]
    fn only_allow_listed_names_run_exactly() {
        let p = policy(&["echo"]);
        assert!(matches!(
            exec(&p, "/bin/echo", &[], Duration::ZERO, &no_stop()),
            Outcome::NotAllowed(_)
        ));
        assert!(matches!(
            exec(&p, "sh", &[], Duration::ZERO, &no_stop()),
            Outcome::NotAllowed(_)
        ));
        assert!(matches!(
            exec(&p, "echo ", &[], Duration::ZERO, &no_stop()),
            Outcome::NotAllowed(_)
        ));
    }

    #[test]
    fn arguments_arrive_literally_and_output_is_capped() {
        let p = policy(&["echo"]);
        let args = vec!["$(id);".to_string(), "|x*".to_string()];
        let Outcome::Completed(o) = exec(&p, "echo", &args, Duration::ZERO, &no_stop()) else {
            panic!("echo did not complete");
        };
        assert_eq!(o.stdout, "$(id); |x*\n");
        assert_eq!(o.exit_code, Some(0));
        let long = vec!["x".repeat(100)];
        let Outcome::Completed(o) = exec(&p, "echo", &long, Duration::ZERO, &no_stop()) else {
            panic!("echo did not complete");
        };
        assert_eq!(o.stdout.len(), 16);
        assert!(o.truncated);
    }

    #[test]
    fn a_program_past_its_limit_is_killed() {
        let p = policy(&["sleep"]);
        let started = Instant::now();
        let outcome = exec(
            &p,
            "sleep",
            &["30".to_string()],
            Duration::from_millis(200),
            &no_stop(),
        );
        assert!(
            matches!(
                outcome,
                Outcome::TimedOut(Output {
                    exit_code: None,
                    ..
                })
            ),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_fails_with_its_name() {
        let p = policy(&["no-such-program-fleetmq"]);
        let Outcome::Failed(why) = exec(
            &p,
            "no-such-program-fleetmq",
            &[],
            Duration::ZERO,
            &no_stop(),
        ) else {
            panic!("expected a failure");
        };
        assert!(why.contains("no-such-program-fleetmq"), "{why}");
    }
}
