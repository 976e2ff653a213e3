//! The HTTP server: hyper (HTTP/1.1) on a tokio runtime of its own, on one
//! thread, so that no client can block another.
//!
//! - At most [`MAX_CONNECTIONS`] connections; past that a client is told
//!   503 (over HTTPS, not told) and closed at once.
//! - A client has [`HEADER_TIMEOUT`] to send a request's head, and a
//!   connection lives at most [`CONNECTION_MAX`]: a slow client, or one
//!   that pipelines requests and never reads the answers, holds only its
//!   own connection, and not for long.
//! - Pipelined requests are answered one after another, in order.
//! - Asking the hub loop blocks (a ZeroMQ request), so it runs on at most
//!   [`HUB_CALLS`] blocking threads at once, each with its own operator
//!   client; `/health` has a thread of its own beside them, so it answers
//!   whatever the other requests wait for.
//! - With a certificate ([`super::tls`]) every connection is HTTPS; its
//!   handshake has [`HEADER_TIMEOUT`] too.
//! - Without a token (loopback only) it answers only requests that name it
//!   by address, as `localhost` or by a name without a dot
//!   ([`named_locally`]), so that a web page cannot read it through a DNS
//!   name of its own pointed at 127.0.0.1 (DNS rebinding).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::tls::Certs;
use super::{Answer, HUB_WAIT, HttpError, route};
use crate::operator::Client;

/// Connections waiting to be taken (the kernel caps it at
/// `net.core.somaxconn`).
pub const BACKLOG: i32 = 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, requests and answers together.
pub const CONNECTION_MAX: Duration = Duration::from_secs(120);
/// Requests asking the hub loop at once (besides `/health`).
pub const HUB_CALLS: usize = 4;

/// A running HTTP server; stops when dropped.
pub struct Http {
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where it listens, as `http://HOST:PORT` (`https://` with a
    /// certificate).
    pub url: String,
}

/// What every request needs.
struct Shared {
    operator: String,
    token: Option<String>,
    /// The token that may also act (POST).
    admin: Option<String>,
    /// Operator clients not in use: one per blocking call at most.
    clients: Mutex<Vec<Client>>,
    /// Turns for asking the hub; `/health` does not take one.
    calls: Semaphore,
}

impl Shared {
    /// Answers one GET of `url`, on a blocking thread, with a client from
    /// the pool.
    fn ask(&self, url: &str, post: Option<&[u8]>) -> Answer {
        let pooled = self.clients.lock().ok().and_then(|mut c| c.pop());
        let mut client = pooled.unwrap_or_else(|| {
            Client::new(self.operator.clone(), HUB_WAIT).routing_prefix(crate::core::HTTP_CLIENT)
        });
        let answer = match post {
            None => route(&mut client, url),
            Some(body) => super::actions::act(&mut client, url, body),
        };
        if let Ok(mut c) = self.clients.lock() {
            c.push(client);
        }
        answer
    }
}

impl Http {
    /// Listens on `addr` (`HOST:PORT`, port 0 for any) and answers with data
    /// from the hub's operator socket at `operator`. With a `token`, every
    /// request but `/health` must carry it as `Authorization: Bearer`;
    /// without one only a loopback address is served. A request carrying
    /// the `admin` token may also act (`POST`). With `certs`, it serves
    /// HTTPS only.
    pub fn start(
        addr: &str,
        operator: String,
        token: Option<String>,
        admin: Option<String>,
        certs: Option<Arc<Certs>>,
    ) -> Result<Http, HttpError> {
        let listen_err = |e: std::io::Error| HttpError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let listener = listen(addr).map_err(listen_err)?;
        let local = listener.local_addr().map_err(listen_err)?;
        may_serve(addr, local.ip(), token.is_some())?;
        let tls = (certs.as_ref())
            .map(|c| {
                c.server_config()
                    .map(|config| TlsAcceptor::from(Arc::new(config)))
            })
            .transpose()
            .map_err(HttpError::Tls)?;
        let url = format!("{}://{local}", if tls.is_some() { "https" } else { "http" });
        let shared = Arc::new(Shared {
            operator,
            token,
            admin,
            clients: Mutex::new(Vec::new()),
            calls: Semaphore::new(HUB_CALLS),
        });
        let stop = Arc::new(Notify::new());
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    // HUB_CALLS, /health, and one spare.
                    .max_blocking_threads(HUB_CALLS + 2)
                    .build();
                match runtime {
                    Ok(rt) => {
                        rt.block_on(accept(listener, shared, tls, &stopping));
                        rt.shutdown_timeout(Duration::from_secs(1));
                    }
                    Err(e) => warn!(error = %e, "could not start the HTTP runtime; HTTP is off"),
                }
            })
            .map_err(HttpError::Thread)?;
        info!(%url, "HTTP listening: /metrics, /health, /api/...");
        Ok(Http {
            stop,
            thread: Some(thread),
            url,
        })
    }

    /// Stops taking connections; requests in flight are finished (the hub
    /// loop keeps answering until [`Http::finished`] or its grace ends).
    pub fn begin_stop(&self) {
        self.stop.notify_one();
    }

    /// Whether the server thread has ended.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.begin_stop();
        let Some(t) = self.thread.take() else { return };
        if !t.is_finished() {
            // Still in a request whose answer can no longer come: leaving
            // it keeps shutdown quick; the process is ending.
            debug!("HTTP thread still busy at shutdown; not waited for");
        } else if t.join().is_err() {
            warn!("the HTTP thread ended with a panic");
        }
    }
}

/// Whether HTTP may be served at `ip` (`addr` as configured): without a
/// token only on loopback, since anyone who reaches another address could
/// read the fleet.
pub fn may_serve(addr: &str, ip: std::net::IpAddr, token: bool) -> Result<(), HttpError> {
    if token || ip.is_loopback() {
        return Ok(());
    }
    Err(HttpError::NeedsToken {
        addr: addr.to_string(),
    })
}

/// A non-blocking listener on the first address `addr` resolves to, with a
/// backlog of [`BACKLOG`]: std's 128 overflows when a few hundred clients
/// connect at once, and a client whose SYN is dropped waits a second for
/// its retry.
fn listen(addr: &str) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let mut last = None;
    for at in std::net::ToSocketAddrs::to_socket_addrs(addr)? {
        let bound = Socket::new(Domain::for_address(at), Type::STREAM, None).and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&at.into())?;
            s.listen(BACKLOG)?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match bound {
            Ok(s) => return Ok(s.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

/// Takes connections until told to stop.
async fn accept(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop: &Notify,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return warn!(error = %e, "could not serve HTTP"),
    };
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            () = stop.notified() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: a moment for some
                    // to close rather than spin.
                    warn!(error = %e, "could not accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(connection(stream, shared.clone(), tls.clone(), permit));
            }
            // A TLS client would read the plain 503 as a broken
            // handshake: it is just closed.
            Err(_) if tls.is_some() => drop(stream),
            Err(_) => refuse(&stream),
        }
    }
}

/// Serves one connection, after its TLS handshake if there is one.
async fn connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    _open: OwnedSemaphorePermit,
) {
    let Some(tls) = tls else {
        return serve(stream, shared).await;
    };
    match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve(stream, shared).await,
        Ok(Err(e)) => debug!(error = %e, "HTTPS handshake failed"),
        Err(_) => debug!("HTTPS handshake took too long; closed"),
    }
}

/// Serves the requests on one connection, within its time.
async fn serve<S>(stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_MAX, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "HTTP connection ended"),
        Err(_) => debug!("HTTP connection open too long; closed"),
    }
}

/// Tells a client past [`MAX_CONNECTIONS`] to come back, and closes.
fn refuse(stream: &tokio::net::TcpStream) {
    let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 43\r\nConnection: close\r\n\r\ntoo many connections to the hub; try again\n";
    // A fresh connection's send buffer takes it whole; if not, it is cut.
    let _ = stream.try_write(busy);
}

/// One request.
async fn handle(
    req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let url = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let health = req.uri().path() == "/health";
    // The page itself holds no data (it reads the API with the token it
    // was opened with, /#token=TOKEN), so it is served without one.
    let page =
        req.method() == hyper::Method::GET && matches!(req.uri().path(), "/" | "/index.html");
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let admin = (shared.admin.as_deref()).is_some_and(|t| carries_token(given.as_deref(), t));
    let allowed = health
        || page
        || admin
        || (shared.token.as_deref()).is_none_or(|t| carries_token(given.as_deref(), t));
    let post = req.method() == hyper::Method::POST;
    let named = (req.uri().authority().map(|a| a.as_str().to_string()))
        .or_else(|| Some(req.headers().get(HOST)?.to_str().ok()?.to_string()));
    let (status, content_type, body) = if shared.token.is_none() && !named_locally(named.as_deref())
    {
        debug!(
            host = named.as_deref(),
            url, "HTTP request under a name refused"
        );
        (403, "text/plain", not_named_locally(named.as_deref()))
    } else if !allowed {
        let why =
            "a bearer token is needed: Authorization: Bearer TOKEN (the page: /#token=TOKEN)\n";
        (401, "text/plain", why.to_string())
    } else if req.uri().path() == "/api/me" {
        let role = if admin { "admin" } else { "read" };
        (200, "application/json", format!("{{\"role\":\"{role}\"}}"))
    } else if post && !admin {
        let why = "acting (commands, jobs, announcements) needs the admin token: security.http_admin_token_file\n";
        (403, "text/plain", why.to_string())
    } else if req.method() != hyper::Method::GET && !post {
        (
            405,
            "text/plain",
            "only GET, and POST with the admin token, are served\n".to_string(),
        )
    } else if post {
        match read_body(req).await {
            Ok(bytes) => {
                let _turn = shared.calls.acquire().await.ok();
                let asking = shared.clone();
                let path = url.clone();
                let answer =
                    tokio::task::spawn_blocking(move || asking.ask(&path, Some(&bytes))).await;
                answer.unwrap_or_else(|e| (500, "text/plain", format!("the request failed: {e}\n")))
            }
            Err(answer) => answer,
        }
    } else {
        // /health does not wait for a turn: it says whether the loop
        // answers, whatever else is asked of it.
        let turn = if health {
            None
        } else {
            shared.calls.acquire().await.ok()
        };
        let asking = shared.clone();
        let url = url.clone();
        let answer = tokio::task::spawn_blocking(move || asking.ask(&url, None)).await;
        drop(turn);
        answer.unwrap_or_else(|e| (500, "text/plain", format!("the request failed: {e}\n")))
    };
    debug!(url, status, "HTTP request");
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == 401 {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    // Answers are what they say they are, and the page is never shown
    // inside another site's frame.
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}

/// Whether a request naming the hub as `host` (its Host header or its
/// absolute URL's authority, port and all) may be answered by a hub
/// serving without a token: one that names it by an IP address, as
/// `localhost` (or a name under `.localhost`, which resolves to loopback
/// only) or by a name without a dot (this machine's host name, an alias
/// in /etc/hosts), and one that names nothing (HTTP/1.0). A web page that
/// points a DNS name of its own at 127.0.0.1 (DNS rebinding) sends that
/// name, which has a dot, and would otherwise read the fleet as if it
/// were the hub's own page.
pub fn named_locally(host: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(bracketed) => match bracketed.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || !name.contains('.')
}

/// Why a request under another name was refused, and what to do.
fn not_named_locally(host: Option<&str>) -> String {
    format!(
        "this hub serves HTTP without a token, so it answers only requests that name it \
         by IP address, as localhost or by a name without a dot (this one named {:?}): a \
         web page cannot then read it through a DNS name pointed at this machine. Open it \
         as http://127.0.0.1:PORT or http://localhost:PORT, or give it a token \
         (security.http_token_file) to serve it under such a name\n",
        host.unwrap_or_default()
    )
}

/// A POST's body, at most [`super::actions::MAX_BODY`] bytes.
async fn read_body(req: hyper::Request<Incoming>) -> Result<Vec<u8>, Answer> {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(req.into_body(), super::actions::MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) => Err((
            400,
            "text/plain",
            format!(
                "could not read the body (at most {} bytes): {e}\n",
                super::actions::MAX_BODY
            ),
        )),
    }
}

/// Whether `given` (an Authorization header) is `Bearer TOKEN` with this
/// token, compared in time that does not depend on where they differ.
pub fn carries_token(given: Option<&str>, token: &str) -> bool {
    let Some(given) = given.and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub without a token answers addresses, localhost and names without
    /// a dot, and no name a DNS-rebinding page could send.
    #[test]
    fn without_a_token_no_name_with_a_dot_is_answered_but_localhost() {
        for local in [
            None,
            Some("127.0.0.1"),
            Some("127.0.0.1:7756"),
            Some("127.1.2.3:80"),
            Some("[::1]:7756"),
            Some("[::1]"),
            Some("::1"),
            Some("192.168.1.20:7756"),
            Some("localhost"),
            Some("LocalHost:7756"),
            Some("localhost.:7756"),
            Some("hub.localhost:7756"),
            Some("x"),
            Some("raspberrypi:7756"),
            Some("HUB."),
            Some(""),
        ] {
            assert!(named_locally(local), "{local:?}");
        }
        for named in [
            Some("evil.example"),
            Some("evil.example:7756"),
            Some("127.0.0.1.evil.example:7756"),
            Some("localhost.evil.example"),
            Some("notlocalhost.example:7756"),
            Some("[::1"),
            Some("[evil.example]:7756"),
            Some("hub.lan:7756"),
            Some("Evil.Example."),
        ] {
            assert!(!named_locally(named), "{named:?}");
        }
        let why = not_named_locally(Some("evil.example:7756"));
        assert!(
            why.contains("\"evil.example:7756\"") && why.contains("security.http_token_file"),
            "{why}"
        );
    }

    /// Clients that connect at once while the server is busy wait in the
    /// backlog instead of having their SYNs dropped (a second's retry each).
    #[test]
    fn hundreds_of_clients_connecting_at_once_all_get_in() {
        let listener = listen("127.0.0.1:0").expect("listening on loopback");
        let at = listener.local_addr().unwrap();
        // Nobody accepts: every connection stays queued.
        let queued: Vec<std::net::TcpStream> = (0..300)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&at, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connection {i} not queued: {e}"))
            })
            .collect();
        assert_eq!(queued.len(), 300);
    }

    /// A port another program listens on is refused, as std's bind did
    /// (address reuse covers only connections that are closing).
    #[test]
    fn a_port_in_use_is_refused() {
        let first = listen("127.0.0.1:0").unwrap();
        let taken = first.local_addr().unwrap().to_string();
        let e = listen(&taken).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }
}
