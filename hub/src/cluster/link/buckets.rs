//! The key-value buckets (holders, the allow list, front-ends alive), the
//! stream's health, announcements and what other front-ends ask.

use super::*;

/// Says this front-end lives, every [`FRONTEND_BEAT_S`].
pub(super) async fn beat(shared: Shared) {
    let mut every = tokio::time::interval(Duration::from_secs(FRONTEND_BEAT_S));
    loop {
        every.tick().await;
        let report = shared.report.lock().map(|r| r.clone()).unwrap_or_default();
        if let Err(e) = shared.frontends.put(&shared.name, report.into()).await {
            debug!(error = %e, "could not say this front-end lives");
        }
    }
}

/// Writes each device's holder and enrolment, in order: the newest
/// connection wins.
pub(super) async fn write_presence(shared: Shared, mut rx: mpsc::UnboundedReceiver<ToCluster>) {
    while let Some(msg) = rx.recv().await {
        let (device, online, said) = match msg {
            ToCluster::Enrol { device, keys } => {
                enrol(&shared, &device, &keys).await;
                continue;
            }
            ToCluster::Forget { device, ask } => {
                let outcome = forget(&shared, &device).await;
                shared.out.send(FromCluster::Forgot {
                    ask,
                    device,
                    outcome,
                });
                continue;
            }
            // Online without a Hello (heard after a restart): what it
            // said before stays.
            ToCluster::Online {
                device,
                version,
                arch,
                groups,
            } => {
                let said = (!version.is_empty()).then_some(crate::cluster::Said {
                    version,
                    arch,
                    groups,
                });
                (device, true, said)
            }
            ToCluster::Offline { device } => (device, false, None),
            ToCluster::Facts { device, facts } => {
                let write = || set_facts(&shared, &device, &facts);
                five_times(&device, "what the device is", write).await;
                continue;
            }
            _ => continue,
        };
        let write = || set_holder(&shared, &device, online, said.as_ref());
        five_times(&device, "which front-end holds the device", write).await;
    }
}

/// Tries a compare-and-set of `device`'s holder up to five times (another
/// front-end may write it in between), and says if none took.
async fn five_times<F, W>(device: &str, what: &str, mut write: W)
where
    W: FnMut() -> F,
    F: std::future::Future<Output = Result<(), String>>,
{
    for attempt in 0..5 {
        match write().await {
            Ok(()) => return,
            Err(e) if attempt == 4 => warn!(device, error = %e, "could not record {what}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One compare-and-set of a device's facts in its holder.
async fn set_facts(
    shared: &Shared,
    device: &str,
    facts: &fleetmq_protocol::DeviceFacts,
) -> Result<(), String> {
    let (entry, held) = held(shared, device).await?;
    match crate::cluster::with_facts(held.as_ref(), &shared.name, facts) {
        Some(next) => write_holder(shared, device, entry, &next).await,
        None => Ok(()),
    }
}

/// Puts `device`'s keys in the allow list bucket (none: deletes it).
pub(super) async fn enrol(shared: &Shared, device: &str, keys: &[String]) {
    let done = if keys.is_empty() {
        shared.allow.delete(device).await.map_err(|e| e.to_string())
    } else {
        let value = crate::cluster::allow::value(keys);
        shared
            .allow
            .put(device, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match done {
        Ok(()) => info!(
            device,
            keys = keys.len(),
            "allow list change sent to the cluster"
        ),
        Err(e) => {
            warn!(device, error = %e, "could not put an allow list change in the cluster; edit the file again once NATS is back")
        }
    }
}

/// Tells the loop what the allow list bucket holds, then each change.
pub(super) async fn watch_enrolled(shared: Shared) {
    loop {
        if let Err(e) = watch_enrolled_once(&shared).await {
            debug!(error = %e, "watching the allow list bucket; again in a second");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(super) async fn watch_enrolled_once(shared: &Shared) -> Result<(), String> {
    let mut all = crate::cluster::allow::Enrolled::new();
    let mut newest = 0;
    let mut keys = shared.allow.keys().await.map_err(|e| e.to_string())?;
    let mut devices = Vec::new();
    while let Some(key) = keys.next().await {
        devices.push(key.map_err(|e| e.to_string())?);
    }
    for device in devices {
        if let Some(entry) = shared
            .allow
            .entry(&device)
            .await
            .map_err(|e| e.to_string())?
            && entry.operation == kv::Operation::Put
        {
            newest = newest.max(entry.revision);
            all.insert(device, crate::cluster::allow::keys_in(&entry.value));
        }
    }
    shared.out.send(FromCluster::EnrolledAll(all));
    let mut watch = shared
        .allow
        .watch_all_from_revision(newest + 1)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        let keys = match entry.operation {
            kv::Operation::Put => crate::cluster::allow::keys_in(&entry.value)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        shared.out.send(FromCluster::EnrolledOne {
            device: entry.key,
            keys,
        });
    }
    Err("the watch ended".into())
}

/// A device's entry in the holders bucket, and the holder it holds.
async fn held(
    shared: &Shared,
    device: &str,
) -> Result<(Option<kv::Entry>, Option<Holder>), String> {
    let entry = (shared.devices.entry(device).await).map_err(|e| e.to_string())?;
    let holder = entry
        .as_ref()
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok());
    Ok((entry, holder))
}

/// Writes `next` over `entry` (read by [`held`]) only if nobody wrote the
/// key since: compare-and-set.
async fn write_holder(
    shared: &Shared,
    device: &str,
    entry: Option<kv::Entry>,
    next: &Holder,
) -> Result<(), String> {
    let value = serde_json::to_vec(next).map_err(|e| e.to_string())?;
    match entry {
        Some(e) => (shared.devices)
            .update(device, value.into(), e.revision)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => (shared.devices)
            .create(device, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// One compare-and-set of a device's holder.
pub(super) async fn set_holder(
    shared: &Shared,
    device: &str,
    online: bool,
    said: Option<&crate::cluster::Said>,
) -> Result<(), String> {
    let (entry, held) = held(shared, device).await?;
    let Some(next) = crate::cluster::next_holder(
        held.as_ref(),
        &shared.name,
        online,
        said,
        crate::cluster::now_ms(),
    ) else {
        return Ok(());
    };
    write_holder(shared, device, entry, &next).await
}

/// Marks `device` forgotten in the holders bucket, unless a live
/// front-end holds it online; a connection written in between wins (the
/// write is a compare-and-set). Returns the holder written.
pub(super) async fn forget(shared: &Shared, device: &str) -> Result<Holder, String> {
    let (entry, held) = held(shared, device)
        .await
        .map_err(|e| format!("the cluster's devices bucket did not answer ({e}); try again"))?;
    if let Some(h) = held.as_ref().filter(|h| h.online) {
        let live = shared.frontends.get(&h.frontend).await;
        if matches!(live, Ok(Some(_))) {
            return Err(format!(
                "{device} is online at front-end {}: stop its agent (or revoke it), then forget it",
                h.frontend
            ));
        }
    }
    let next = Holder::forgotten_now(held.as_ref(), crate::cluster::now_ms());
    write_holder(shared, device, entry, &next).await.map_err(|e| {
        format!("{device} changed in the cluster while it was being forgotten (did it connect?): {e}; try again")
    })?;
    Ok(next)
}

/// Tells the loop who holds each device, and each change.
pub(super) async fn watch_holders(shared: Shared) {
    loop {
        match shared.devices.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    let holder = match entry.operation {
                        kv::Operation::Put => serde_json::from_slice::<Holder>(&entry.value).ok(),
                        _ => None,
                    };
                    shared.out.send(FromCluster::Holder {
                        device: entry.key,
                        holder,
                    });
                }
            }
            Err(e) => debug!(error = %e, "watching the devices bucket"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tells the loop which front-ends live, every [`FRONTEND_BEAT_S`].
pub(super) async fn list_front_ends(shared: Shared) {
    let mut every = tokio::time::interval(Duration::from_secs(FRONTEND_BEAT_S));
    loop {
        every.tick().await;
        let Ok(mut keys) = shared.frontends.keys().await else {
            continue;
        };
        let mut names = Vec::new();
        while let Some(Ok(name)) = keys.next().await {
            names.push(name);
        }
        let mut live = Vec::with_capacity(names.len());
        for name in names {
            let report = match shared.frontends.get(&name).await {
                Ok(Some(r)) => r.to_vec(),
                _ => Vec::new(),
            };
            live.push((name, report));
        }
        shared.out.send(FromCluster::FrontEnds(live));
    }
}

/// Asks the telemetry stream for its state every [`HEALTH_EVERY`]: the
/// loop hears whether the cluster would take a batch now (its stream has
/// a leader that answers), whether or not agents send any.
pub(super) async fn check_health(shared: Shared) {
    let mut every = tokio::time::interval(HEALTH_EVERY);
    let mut told: Option<Option<String>> = None;
    loop {
        every.tick().await;
        let health =
            match tokio::time::timeout(HEALTH_EVERY * 2, shared.js.get_stream(STREAM)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("the telemetry stream does not answer: {e}")),
                Err(_) => Some("the telemetry stream does not answer".to_string()),
            };
        if told.as_ref() != Some(&health) {
            told = Some(health.clone());
            shared.out.send(FromCluster::Connection(health));
        }
    }
}

/// Hands the loop the announcements other front-ends made.
pub(super) async fn hear_broadcasts(shared: Shared) {
    loop {
        match shared.client.subscribe(BROADCAST_SUBJECT).await {
            Ok(mut heard) => {
                while let Some(msg) = heard.next().await {
                    let Some(headers) = &msg.headers else {
                        continue;
                    };
                    let from = headers.get(HEADER_FROM).map(|v| v.as_str());
                    let Some(topic) = headers.get(HEADER_TOPIC).map(|v| v.to_string()) else {
                        continue;
                    };
                    if from == Some(shared.name.as_str()) {
                        continue;
                    }
                    shared.out.send(FromCluster::Broadcast {
                        topic,
                        frame: msg.payload.to_vec(),
                    });
                }
            }
            Err(e) => debug!(error = %e, "subscribing to announcements"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Hands the loop what other front-ends ask this one.
pub(super) async fn answer_asks(
    shared: Shared,
    replies: Arc<std::sync::Mutex<std::collections::HashMap<u64, async_nats::Subject>>>,
) {
    let mut next = 0u64;
    loop {
        match shared
            .client
            .subscribe(crate::cluster::ask_subject(&shared.name))
            .await
        {
            Ok(mut asks) => {
                while let Some(msg) = asks.next().await {
                    let Some(reply) = msg.reply else { continue };
                    next += 1;
                    if let Ok(mut r) = replies.lock() {
                        r.insert(next, reply);
                        // One the loop never answered is forgotten in time
                        // (its asker has stopped waiting long before).
                        if r.len() > MAX_ASKS {
                            let oldest = next.saturating_sub(MAX_ASKS as u64);
                            r.retain(|id, _| *id > oldest);
                        }
                    }
                    shared.out.send(FromCluster::Asked {
                        id: next,
                        frame: msg.payload.to_vec(),
                    });
                }
            }
            Err(e) => debug!(error = %e, "subscribing to what other front-ends ask"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
