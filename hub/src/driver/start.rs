//! Starting the hub: the data directory locked, the store opened, keys
//! and allow lists loaded, every socket bound with its options and monitor,
//! the HTTP side started, and where it all listens written down. Then
//! [`Driver::serve`] runs until shutdown.

use super::*;

/// Writes `endpoints.json`, where the command line finds the hub. An
/// earlier run's file goes first: its ports may be stale, and on a full
/// disk its room is what the new one needs. A hub whose disk has no room
/// even then still starts, and says so.
fn write_endpoints(dir: &Path, endpoints: &Endpoints) -> PathBuf {
    let path = dir.join(crate::operator::client::ENDPOINTS_FILE);
    let _ = std::fs::remove_file(&path);
    // Our own plain struct always serializes.
    let text = serde_json::to_string_pretty(endpoints).unwrap_or_default();
    if let Err(e) = fleetmq_net::files::write_atomically(&path, text.as_bytes(), None) {
        warn!(
            file = %path.display(),
            error = %e,
            "could not write endpoints.json (is the disk full?); the hub runs, and commands on this machine need --endpoint or the config's ports to find it"
        );
    }
    path
}

/// Space the hub keeps in its data directory (a file, `reserve`) so that it
/// can open its store on a full disk: SQLite makes or grows its `-wal` and
/// `-shm` files when it opens. Given up when the store will not open, made
/// again at the next start with room.
const RESERVE_BYTES: usize = 1 << 20;

/// Opens the store, giving up the reserve for a second try if need be.
fn open_store(dir: &Path, sync: crate::store::Synchronous) -> Result<Store, Error> {
    let reserve = dir.join("reserve");
    let store = match Store::open(dir, sync) {
        Err(first) if fleetmq_net::files::give_up_reserve(&reserve) => {
            warn!(error = %first, "could not open the store; gave up the data directory's 1 MB reserve (is the disk full?) and trying again");
            Store::open(dir, sync)
        }
        opened => opened,
    }
    .map_err(|source| Error::Store {
        dir: dir.to_path_buf(),
        source,
    })?;
    fleetmq_net::files::keep_reserve(&reserve, RESERVE_BYTES);
    Ok(store)
}

/// Binds the local operator socket. As a Unix socket (`ipc://PATH`) it is
/// made the hub's user's alone: libzmq makes the file with the umask's
/// mode. A socket another hub answers on is an error (libzmq would take
/// the path from it in silence); one left by a hub that died is replaced.
fn bind_operator(sockets: &Sockets, endpoint: &str) -> Result<(zmq::Socket, String), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let file = fleetmq_net::endpoint::ipc_path(endpoint).map(PathBuf::from);
    if let Some(path) = &file
        && std::os::unix::net::UnixStream::connect(path).is_ok()
    {
        return Err(Error::OperatorSocket {
            path: path.clone(),
            why: "another fleetmq-hub answers on it; stop that one, or give this one its own listen.operator".into(),
        });
    }
    let bound = sockets.build(zmq::ROUTER).bind(endpoint)?;
    if let Some(path) = &file {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            Error::OperatorSocket {
                path: path.clone(),
                why: format!("could not make it the hub's user's alone (mode 600): {e}"),
            }
        })?;
    }
    Ok(bound)
}

/// Runs the hub until `shutdown` fires.
pub fn run(config: HubConfig, insecure: bool, shutdown: Shutdown) -> Result<(), Error> {
    let dir = config.data_dir.clone();
    // Held until the hub stops.
    let _data_dir = DataDir::lock(&dir)?;
    let files = super::files::read(&config, insecure)?;
    let mut store = open_store(&dir, config.storage.synchronous)?;
    let mut sockets = Sockets::new(config.net.clone());
    let mut enrolment = None;
    let mut zap = None;
    if let Some(list) = files.allow {
        let pub_path = keys::paths(&dir, "hub").1;
        let pair = match files.keys {
            Some(pair) => {
                info!(public_key = %keys::quoted(&pair.public), file = %pub_path.display(), "hub key loaded");
                pair
            }
            None => {
                // files::read found none: made and written here, once.
                let pair = keys::generate().map_err(Error::Keys)?;
                keys::write(&dir, "hub", &pair, false).map_err(Error::Keys)?;
                info!(public_key = %keys::quoted(&pair.public), file = %pub_path.display(), "made the hub's key pair; give agents this public key as hub_public_key");
                pair
            }
        };
        let path = config.allow_list_path();
        crate::enrolment::create_if_missing(&path).map_err(Error::AllowList)?;
        info!(file = %path.display(), keys = list.len(), "allow list loaded");
        if list.is_empty() {
            warn!(file = %path.display(), "no device is enrolled yet: add one with `fleetmq-hub allow DEVICE PUBLIC_KEY`");
        }
        enrolment = Some((list, Watch::new(&path)));
        sockets = sockets.with_security(Security::CurveServer {
            secret: pair.secret.clone(),
        });
        // The handler must be there before the first agent knocks.
        zap = Some(sockets.build(zmq::REP).bind(ZAP_ENDPOINT)?.0);
    }
    let events = i32::from(
        event::DISCONNECTED | event::HANDSHAKE_FAILED_NO_DETAIL | event::HANDSHAKE_FAILED_PROTOCOL,
    );
    // One inproc monitor per agent-facing socket, named after it.
    let monitor = |name: &str| format!("inproc://fleetmq-hub-monitor-{name}");
    let l = &config.listen;
    // Few messages wait per agent connection: an agent sends at most its
    // window unacked, and a peer sending more waits in TCP, not in the
    // hub's memory (at most TELEMETRY_QUEUE messages of max_message_bytes).
    let (upstream, telemetry) = sockets
        .build(zmq::ROUTER)
        .hwm(sockets.options().send_hwm, TELEMETRY_QUEUE)
        // A device's full queue is reported, not dropped without a word
        // (core/undelivered.rs).
        .router_mandatory()
        .router_handover()
        .batch_sizes(TELEMETRY_BATCH, TELEMETRY_WRITE_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("telemetry"), events)
        .bind(&l.telemetry)?;
    let (broadcast, broadcast_ep) = sockets
        .build(zmq::XPUB)
        // Only what a device may hear is applied (core/subscriptions.rs).
        .xpub_manual()
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("broadcast"), events)
        .bind(&l.broadcast)?;
    // Few jobs wait in one agent's pipe: a lease covers the rest.
    let (jobs, jobs_ep) = sockets
        .build(zmq::PUSH)
        .hwm(16, 16)
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("jobs"), events)
        .bind(&l.jobs)?;
    let (results, results_ep) = sockets
        .build(zmq::PULL)
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("results"), events)
        .bind(&l.results)?;
    let (commands, commands_ep) = sockets
        .build(zmq::ROUTER)
        .router_mandatory()
        .router_handover()
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("commands"), events)
        .bind(&l.commands)?;
    let monitors = MONITORED
        .iter()
        .map(|name| sockets.build(zmq::PAIR).connect(&monitor(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let (operator, operator_ep) = bind_operator(&sockets, &config.operator_endpoint())?;
    let mut remote = None;
    let mut remote_ep = String::new();
    let mut operators = None;
    if let Some(list) = files.operators {
        let path = config.operator_allow_list_path();
        if list.is_empty() {
            warn!(file = %path.display(), "no operator is allowed on listen.operator_remote yet: add NAME ROLE KEY lines (make a key with `fleetmq-hub keygen --operator`)");
        }
        let (socket, ep) = sockets
            .build(zmq::ROUTER)
            .for_operators()
            .bind(&l.operator_remote)?;
        info!(endpoint = %ep, operators = list.len(), file = %path.display(), "remote operators: CURVE, by the operator allow list");
        remote = Some((socket, Watch::new(&path)));
        remote_ep = ep;
        operators = Some(list);
    }
    let http = if let Some(super::files::HttpFiles {
        token,
        admin,
        certs,
    }) = files.http
    {
        let made = |file: TokenFile, role: &str| -> Result<String, Error> {
            let (token, made) = file.token()?;
            if let Some(path) = made {
                info!(file = %path.display(), "made the HTTP {role} token (only the hub's user may read it); `fleetmq-hub console-url` prints the console's address with it");
            }
            Ok(token)
        };
        let token = token.map(|t| made(t, "read")).transpose()?;
        let admin = admin.map(|t| made(t, "admin")).transpose()?;
        if token.is_some() {
            info!(
                "HTTP needs the bearer token from security.http_token_file (all but /health and the page itself)"
            );
        }
        if admin.is_some() {
            info!(
                "HTTP actions (commands, jobs, announcements) with the token from security.http_admin_token_file"
            );
        }
        if token.is_some() && token == admin {
            warn!(
                "security.http_token_file and http_admin_token_file hold the same token: every reader may act"
            );
        }
        Some(Http::start(
            &l.http,
            operator_ep.clone(),
            token,
            admin,
            certs,
        )?)
    } else {
        None
    };
    let endpoints = Endpoints {
        telemetry,
        broadcast: broadcast_ep,
        jobs: jobs_ep,
        results: results_ep,
        commands: commands_ep,
        operator: operator_ep,
        operator_remote: remote_ep,
        http: http.as_ref().map_or_else(String::new, |h| h.url.clone()),
    };
    let port = |ep: &str| fleetmq_net::endpoint::port(ep).unwrap_or(0);
    let ports = HubPorts {
        broadcast: port(&endpoints.broadcast),
        jobs: port(&endpoints.jobs),
        results: port(&endpoints.results),
        commands: port(&endpoints.commands),
    };
    let cluster = join_cluster(&config, &mut store)?;
    let path = write_endpoints(&dir, &endpoints);
    // The JSON line says how agents must connect.
    let mut printed = serde_json::to_value(&endpoints).unwrap_or_default();
    printed["security"] = sockets.security().name().into();
    if let Some((name, _)) = &cluster {
        printed["front_end"] = name.clone().into();
    }
    println!("{printed}");
    info!(
        telemetry = %endpoints.telemetry,
        operator = %endpoints.operator,
        endpoints = %path.display(),
        "hub listening"
    );
    let (list, watch) = match enrolment {
        Some((list, watch)) => (Some(list), Some(watch)),
        None => (None, None),
    };
    let readers = readers::Readers::start(sockets.context(), &dir)?;
    let webhooks = super::webhooks::Webhooks::start(config.alerts.webhooks.clone(), files.roots)
        .map_err(Error::Webhooks)?;
    let tokens: crate::core::Tokens = Box::new(fleetmq_net::random::u64);
    let list_now = list.clone();
    let mut core = Core::new(config, store, list, ports, now(), tokens);
    if let Some((name, _)) = &cluster {
        core.front_end(name);
    }
    if let Some(operators) = operators {
        core.operators_changed(operators);
    }
    let mut driver = Driver {
        core,
        upstream,
        broadcast,
        jobs,
        results,
        commands,
        operator,
        remote,
        zap,
        watch,
        monitors,
        peers: Peers::default(),
        http,
        readers,
        cluster: cluster.map(|(_, link)| {
            front_end::FrontEnd::new(link, list_now.as_ref(), endpoints.telemetry.clone())
        }),
        webhooks,
    };
    let served = driver.serve(&shutdown);
    // The link says goodbye to the cluster as it drops.
    drop(driver.cluster.take());
    drop(driver.http.take());
    // libzmq removes an ipc:// file only when its reaper thread gets to
    // the socket, which a process on its way out may not wait for.
    if let Some(path) = fleetmq_net::endpoint::ipc_path(&endpoints.operator) {
        let _ = std::fs::remove_file(path);
    }
    served?;
    info!("hub stopped");
    Ok(())
    // Sockets close here with their linger; the context terminates after them.
}

/// Joins the NATS cluster if `config` names one: (this front-end's name,
/// the link).
fn join_cluster(
    config: &HubConfig,
    store: &mut Store,
) -> Result<Option<(String, crate::cluster::Link)>, Error> {
    if config.cluster.servers.is_empty() {
        return Ok(None);
    }
    let name = crate::cluster::front_end_name(&config.cluster.name);
    let failed = |source| Error::Store {
        dir: config.data_dir.clone(),
        source,
    };
    let mark = |store: &Store, name: &str| {
        store
            .mark(name)
            .map(Option::unwrap_or_default)
            .map_err(failed)
    };
    // A hub that becomes a front-end takes the cluster's configuration:
    // versions are places in the cluster's stream from then on.
    if mark(store, crate::core::CONFIG_MARK)? == 0 && store.config_version().unwrap_or(0) > 0 {
        warn!(
            "this hub's own desired configuration is replaced by the cluster's (set it again with `fleetmq-hub config set` if the cluster has none)"
        );
        store.config_clear().map_err(failed)?;
    }
    let after = crate::cluster::Marks {
        telemetry: mark(store, crate::core::STREAM_MARK)?,
        job_events: mark(store, crate::core::JOB_EVENTS_MARK)?,
        config: mark(store, crate::core::CONFIG_MARK)?,
    };
    let link = crate::cluster::Link::start(
        &config.cluster,
        &config.retention.telemetry,
        &config.jobs,
        &config.data_dir,
        &name,
        after,
    )
    .map_err(Error::Cluster)?;
    info!(front_end = %name, after = after.telemetry, "a front-end of the cluster: telemetry is acked once JetStream has it");
    Ok(Some((name, link)))
}
