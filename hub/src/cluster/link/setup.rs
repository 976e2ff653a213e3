//! Joining the cluster: connecting, and making the streams, buckets and
//! the jobs consumer a front-end needs if they are missing.

use super::*;

pub(super) struct Paths {
    pub(super) credentials: Option<PathBuf>,
    pub(super) ca: Option<PathBuf>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}

/// Connects and makes sure the stream and buckets are there.
pub(super) async fn join(
    cfg: &Cluster,
    keep: &crate::config::KeepBytes,
    jobs: &crate::config::Jobs,
    paths: &Paths,
    name: &str,
    out: Out,
) -> Result<Shared, String> {
    let servers = cfg.servers.join(",");
    let mut opts = match &paths.credentials {
        Some(p) => async_nats::ConnectOptions::with_credentials_file(p)
            .await
            .map_err(|e| format!("reading the NATS credentials file {}: {e}", p.display()))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(ca) = &paths.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&paths.cert, &paths.key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let events = out.clone();
    let opts = opts
        .name(format!("fleetmq-hub {name}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => events.send(FromCluster::Connection(None)),
                    async_nats::Event::Disconnected => events.send(FromCluster::Connection(Some(
                        "disconnected from NATS; reconnecting".into(),
                    ))),
                    other => debug!(event = %other, "NATS event"),
                }
            }
        });
    let addrs = cfg
        .servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("cluster.servers: {s:?} is not a NATS URL: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = tokio::time::timeout(CONNECT_TIMEOUT, opts.connect(addrs))
        .await
        .map_err(|_| format!("no NATS server of {servers} answered within {CONNECT_TIMEOUT:?}: is the cluster running, and are cluster.servers right?"))?
        .map_err(|e| format!("connecting to NATS at {servers}: {e} (check cluster.servers, credentials and TLS)"))?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(ACK_TIMEOUT);
    // A cluster that is still forming (its servers just started) cannot
    // make a replicated stream yet: try again for a while.
    let mut tries = 0;
    let made = loop {
        match make_stream_and_buckets(&js, cfg, keep, jobs).await {
            Ok(made) => break made,
            Err(e) if tries < SETUP_TRIES => {
                tries += 1;
                if tries == 1 {
                    info!(error = %e, "JetStream is not ready yet; trying again every second");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let replicas = cfg.replicas;
    info!(
        servers,
        front_end = name,
        replicas,
        "joined the NATS cluster"
    );
    Ok(Shared {
        name: name.to_string(),
        client,
        js,
        devices: made.devices,
        frontends: made.frontends,
        allow: made.allow,
        jobs: made.jobs,
        taken: Arc::default(),
        report: Arc::default(),
        out,
    })
}

/// What a front-end finds or makes in JetStream.
pub(super) struct Made {
    devices: kv::Store,
    frontends: kv::Store,
    allow: kv::Store,
    jobs: consumer::PullConsumer,
}

/// The streams, buckets and the jobs consumer, made if they are missing.
pub(super) async fn make_stream_and_buckets(
    js: &jetstream::Context,
    cfg: &Cluster,
    keep: &crate::config::KeepBytes,
    jobs: &crate::config::Jobs,
) -> Result<Made, String> {
    let replicas = usize::from(cfg.replicas);
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "JetStream refused the {what}: {e} (is JetStream enabled on every server, and are there at least cluster.replicas = {replicas} of them?)"
        )
    };
    js.get_or_create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_PREFIX}>")],
        num_replicas: replicas,
        // Kept as long as a hub keeps telemetry ([retention.telemetry]
        // when the stream is made), so a front-end can be rebuilt from it.
        max_age: Duration::from_secs(keep.max_age_s),
        max_bytes: i64::try_from(keep.max_bytes)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(-1),
        duplicate_window: Duration::from_secs(cfg.dedupe_window_s),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| refused("telemetry stream", &e))?;
    let bucket = |bucket: &str, max_age: Duration| kv::Config {
        bucket: bucket.into(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let devices = open_bucket(js, bucket(DEVICES_BUCKET, Duration::ZERO))
        .await
        .map_err(|e| refused("devices bucket", &e))?;
    let frontends = open_bucket(
        js,
        bucket(FRONTENDS_BUCKET, Duration::from_secs(FRONTEND_TTL_S)),
    )
    .await
    .map_err(|e| refused("front-ends bucket", &e))?;
    let allow = open_bucket(js, bucket(ALLOW_BUCKET, Duration::ZERO))
        .await
        .map_err(|e| refused("allow list bucket", &e))?;
    let queue = js
        .get_or_create_stream(stream::Config {
            name: JOBS_STREAM.into(),
            subjects: vec![JOBS_SUBJECT.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(cfg.dedupe_window_s),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| refused("jobs stream", &e))?;
    js.get_or_create_stream(stream::Config {
        name: crate::cluster::config::CONFIG_STREAM.into(),
        subjects: vec![crate::cluster::config::CONFIG_SUBJECT.into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| refused("configuration stream", &e))?;
    js.get_or_create_stream(stream::Config {
        name: EVENTS_STREAM.into(),
        subjects: vec![EVENTS_SUBJECT.into()],
        num_replicas: replicas,
        max_age: Duration::from_secs(30 * 86_400),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| refused("job events stream", &e))?;
    let jobs = queue
        .get_or_create_consumer(
            JOBS_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(JOBS_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(u64::from(jobs.queue_lease_ms())),
                max_deliver: i64::from(jobs.max_attempts),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| refused("jobs consumer", &e))?;
    Ok(Made {
        devices,
        frontends,
        allow,
        jobs,
    })
}

pub(super) async fn open_bucket(
    js: &jetstream::Context,
    cfg: kv::Config,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(cfg.bucket.clone()).await {
        return Ok(store);
    }
    js.create_key_value(cfg).await.map_err(|e| e.to_string())
}
