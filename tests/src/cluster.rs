//! A three-node NATS JetStream cluster on this machine for the front-end
//! tests, on ports the OS picked, each node a [`Proc`] that can be killed
//! and started again on the same ports and store.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Hub, Proc, spawn};

/// nats-server: `FLEETMQ_NATS_SERVER`, else where `scripts/test.sh`
/// installs it (`targets/toolchain.sh`, `ensure_nats_server`).
pub fn nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEETMQ_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let p = crate::target_dir().join("tools/nats/bin/nats-server");
    assert!(
        p.exists(),
        "{} not found: scripts/test.sh installs it (or set FLEETMQ_NATS_SERVER)",
        p.display()
    );
    p
}

/// `n` ports the OS picked, all different and free when this returns: each
/// is held until all are picked (picked one at a time, the OS can hand out
/// a port it just gave, and a node then had the same port for clients and
/// routes).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("picking a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a picked port").port())
        .collect()
}

pub struct NatsCluster {
    dir: PathBuf,
    /// (client port, cluster port) of each node.
    ports: Vec<(u16, u16)>,
    nodes: Vec<Option<Proc>>,
}

impl NatsCluster {
    /// Starts three JetStream nodes in `dir`, each writing to disk before
    /// it acks (`sync_interval: always`). A node must be told its routes'
    /// ports before they listen, so ports are picked free and then bound by
    /// the nodes; if another process took one in between (tests run side by
    /// side), the cluster starts again on new ports.
    pub fn start(dir: &Path) -> NatsCluster {
        const TRIES: usize = 5;
        for attempt in 1..=TRIES {
            let picked = free_ports(6);
            let ports = picked.chunks(2).map(|p| (p[0], p[1])).collect();
            let mut cluster = NatsCluster {
                dir: dir.join(format!("try-{attempt}")),
                ports,
                nodes: vec![None, None, None],
            };
            for i in 0..3 {
                cluster.start_node(i);
            }
            let taken = cluster.nodes.iter().flatten().any(|node| {
                // nats-server says it is ready before it binds its route
                // port: started means both listeners are up.
                crate::wait_for(&format!("{} to start", node.name), || {
                    let log = node.log_text();
                    if log.contains("address already in use") {
                        Some(true)
                    } else if log.contains("Server is ready")
                        && log.contains("Listening for route connections")
                    {
                        Some(false)
                    } else {
                        None
                    }
                })
            });
            if !taken {
                return cluster;
            }
            eprintln!("a NATS port was taken by another process; starting the cluster again");
        }
        panic!("{TRIES} times a NATS port was taken before the node bound it");
    }

    /// Each node's client port.
    pub fn client_ports(&self) -> Vec<u16> {
        self.ports.iter().map(|(client, _)| *client).collect()
    }

    /// The client URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_node(&mut self, i: usize) {
        let node_dir = self.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&node_dir).expect("creating a node dir");
        let routes: Vec<String> = self
            .ports
            .iter()
            .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
            .collect();
        let (client, route) = self.ports[i];
        let config = format!(
            "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\nmax_payload: 8MB\n\
             jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
             cluster {{ name: fleetmq, listen: \"127.0.0.1:{route}\", routes: [{}], no_advertise: true }}\n",
            node_dir.join("js").display(),
            routes.join(", ")
        );
        let path = node_dir.join("nats.conf");
        std::fs::write(&path, config).expect("writing a node config");
        let mut cmd = std::process::Command::new(nats_server());
        cmd.arg("-c").arg(&path);
        let n = std::fs::read_dir(&node_dir).map(|d| d.count()).unwrap_or(0);
        self.nodes[i] = Some(spawn(
            &format!("nats-n{i}"),
            cmd,
            node_dir.join(format!("nats-{n}.log")),
            false,
        ));
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.signal(libc::SIGKILL);
            node.wait_exit(crate::WAIT);
        }
    }

    /// Starts node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.start_node(i);
        if let Some(node) = &self.nodes[i] {
            node.wait_log("Server is ready");
        }
    }
}

/// `[cluster]` for a front-end called `name` of `cluster`.
pub fn front_end_config(cluster: &NatsCluster, name: &str) -> String {
    front_end_config_via(&cluster.urls(), name)
}

/// `[cluster]` for a front-end called `name` that reaches NATS at `urls`
/// (comma-separated).
pub fn front_end_config_via(urls: &str, name: &str) -> String {
    let servers: Vec<String> = urls.split(',').map(|u| format!("\"{u}\"")).collect();
    format!(
        "[cluster]\nservers = [{}]\nname = \"{name}\"\n",
        servers.join(", ")
    )
}

/// Starts front-end `name` in `dir` over `cluster`, with `extra` config.
/// Front-ends share one CURVE key pair: `keys_from` (an earlier
/// front-end's data directory) is copied in first.
pub fn start_front_end(
    dir: &Path,
    cluster: &NatsCluster,
    name: &str,
    keys_from: Option<&Path>,
    extra: &str,
) -> Hub {
    start_front_end_via(dir, &cluster.urls(), name, keys_from, extra)
}

/// [`start_front_end`] reaching NATS at `urls` (through [`Proxy`]s, say).
pub fn start_front_end_via(
    dir: &Path,
    urls: &str,
    name: &str,
    keys_from: Option<&Path>,
    extra: &str,
) -> Hub {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("creating a front-end data dir");
    if let Some(from) = keys_from {
        for f in ["hub.key", "hub.pub"] {
            std::fs::copy(from.join(f), data.join(f)).expect("sharing the hub key pair");
        }
    }
    Hub::start(dir, &format!("{}{extra}", front_end_config_via(urls, name)))
}

/// A TCP proxy to a port on this machine that a test can cut (every
/// connection through it ends, new ones are refused) and heal.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        std::thread::spawn({
            let (cut, open) = (cut.clone(), open.clone());
            move || {
                for down in listener.incoming() {
                    let Ok(down) = down else { continue };
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                        continue;
                    };
                    let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else {
                        continue;
                    };
                    if let Ok(mut o) = open.lock() {
                        o.extend(down.try_clone().ok());
                        o.extend(up.try_clone().ok());
                    }
                    std::thread::spawn(move || pump(down, up));
                    std::thread::spawn(move || pump(u2, d2));
                }
            }
        });
        Proxy { port, cut, open }
    }

    /// Ends every connection through it and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.open.lock().expect("proxy connections").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
