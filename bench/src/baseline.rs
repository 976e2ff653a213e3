//! What libzmq alone does on the path of a command, for the round-trip
//! benchmark to stand beside: a bare REQ/REP round trip, and a relay with
//! the command's four hops and nothing in between (an operator's REQ to a
//! ROUTER, a thread that hands each request to a second ROUTER and each
//! answer back, a DEALER that echoes). Each side has a context, so an I/O
//! thread, of its own, as the operator, hub and agent processes have. What
//! fleetmq's ping takes beyond the relay is fleetmq's own work; what the
//! relay takes beyond REQ/REP is the path's second round trip.

use std::time::{Duration, Instant};

/// How long a side waits for its peer before it gives up.
const PATIENCE_MS: i32 = 10_000;

fn bound(ctx: &zmq::Context, kind: zmq::SocketType) -> anyhow::Result<(zmq::Socket, String)> {
    let socket = ctx.socket(kind)?;
    socket.set_linger(0)?;
    socket.set_rcvtimeo(PATIENCE_MS)?;
    socket.bind("tcp://127.0.0.1:*")?;
    let endpoint = socket
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("a bound endpoint that is not UTF-8"))?;
    Ok((socket, endpoint))
}

/// A socket connected to `to`, with routing id `id` if given.
fn connected(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    id: Option<&[u8]>,
    to: &str,
) -> anyhow::Result<zmq::Socket> {
    let socket = ctx.socket(kind)?;
    socket.set_linger(0)?;
    socket.set_rcvtimeo(PATIENCE_MS)?;
    if let Some(id) = id {
        socket.set_identity(id)?;
    }
    socket.connect(to)?;
    Ok(socket)
}

/// Times `count` round trips of `request` bytes on `req`, each answered
/// with `reply` bytes; sorted.
fn time(
    req: &zmq::Socket,
    count: usize,
    request: usize,
    reply: usize,
) -> anyhow::Result<Vec<Duration>> {
    let ask = vec![0u8; request];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        req.send(&ask, 0)?;
        let answer = req.recv_bytes(0)?;
        times.push(t.elapsed());
        anyhow::ensure!(
            answer.len() == reply,
            "an answer of {} bytes, not {reply}",
            answer.len()
        );
    }
    times.sort();
    Ok(times)
}

fn joined(side: std::thread::JoinHandle<anyhow::Result<()>>, name: &str) -> anyhow::Result<()> {
    side.join()
        .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))?
}

/// `count` bare REQ/REP round trips of these sizes: sorted times.
pub fn req_rep(count: usize, request: usize, reply: usize) -> anyhow::Result<Vec<Duration>> {
    let server_ctx = zmq::Context::new();
    let (rep, endpoint) = bound(&server_ctx, zmq::REP)?;
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let answer = vec![0u8; reply];
        for _ in 0..count {
            rep.recv_bytes(0)?;
            rep.send(&answer, 0)?;
        }
        Ok(())
    });
    let ctx = zmq::Context::new();
    let req = connected(&ctx, zmq::REQ, None, &endpoint)?;
    let times = time(&req, count, request, reply)?;
    joined(server, "REP")?;
    Ok(times)
}

/// The routing id the relay's echoing DEALER takes.
const ECHO: &[u8] = b"echo";

/// `count` round trips of these sizes through the relay (see the module's
/// docs): sorted times.
pub fn relay(count: usize, request: usize, reply: usize) -> anyhow::Result<Vec<Duration>> {
    let relay_ctx = zmq::Context::new();
    let (front, front_ep) = bound(&relay_ctx, zmq::ROUTER)?;
    let (back, back_ep) = bound(&relay_ctx, zmq::ROUTER)?;
    back.set_router_mandatory(true)?;

    // The echo connects first and says it is there, so the relay's first
    // hand-over finds it.
    let echo_ctx = zmq::Context::new();
    let echo = connected(&echo_ctx, zmq::DEALER, Some(ECHO), &back_ep)?;
    echo.send("here", 0)?;
    let hello = back.recv_multipart(0)?;
    anyhow::ensure!(
        hello.first().map(Vec::as_slice) == Some(ECHO),
        "the echo did not say hello"
    );
    let echoing = std::thread::spawn(move || -> anyhow::Result<()> {
        let answer = vec![0u8; reply];
        for _ in 0..count {
            // [client][][request] in, [client][][answer] out.
            let mut frames = echo.recv_multipart(0)?;
            anyhow::ensure!(frames.len() == 3, "the echo got {} frames", frames.len());
            frames[2] = answer.clone();
            echo.send_multipart(frames, 0)?;
        }
        Ok(())
    });
    let relaying = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut handed = (0, 0);
        while handed != (count, count) {
            let mut items = [
                front.as_poll_item(zmq::POLLIN),
                back.as_poll_item(zmq::POLLIN),
            ];
            anyhow::ensure!(
                zmq::poll(&mut items, i64::from(PATIENCE_MS))? > 0,
                "the relay heard nothing for {PATIENCE_MS} ms"
            );
            let (asked, answered) = (items[0].is_readable(), items[1].is_readable());
            // [client][][request] to [echo][client][][request]; back again.
            while asked && let Ok(frames) = front.recv_multipart(zmq::DONTWAIT) {
                let mut out = vec![ECHO.to_vec()];
                out.extend(frames);
                back.send_multipart(out, 0)?;
                handed.0 += 1;
            }
            while answered && let Ok(mut frames) = back.recv_multipart(zmq::DONTWAIT) {
                frames.remove(0);
                front.send_multipart(frames, 0)?;
                handed.1 += 1;
            }
        }
        Ok(())
    });
    let ctx = zmq::Context::new();
    let req = connected(&ctx, zmq::REQ, None, &front_ep)?;
    let times = time(&req, count, request, reply)?;
    joined(relaying, "relay")?;
    joined(echoing, "echo")?;
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_answers_every_request_through_its_four_hops() {
        let times = relay(50, 20, 30).unwrap();
        assert_eq!(times.len(), 50);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted");
    }

    #[test]
    fn req_rep_answers_every_request() {
        assert_eq!(req_rep(50, 20, 30).unwrap().len(), 50);
    }
}
