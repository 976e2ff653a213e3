//! Work-queue jobs: submitted to the queue, taken one at a time, settled.

use super::*;

/// Records a new job (`Submitted` or `Aimed`) on the events stream, whose
/// sequence is its id; a work-queue job then goes on the queue too. A
/// retried request (same client and request id) is the same event to
/// JetStream within the dedupe window, and so the same job.
pub(super) async fn submit_job(
    shared: &Shared,
    client: &[u8],
    request_id: u64,
    event: JobEvent,
) -> Result<u64, String> {
    let retry_id = format!(
        "{}/{}/{request_id}",
        shared.name,
        base64::engine::general_purpose::STANDARD.encode(client)
    );
    let msg = jetstream::message::PublishMessage::build()
        .message_id(retry_id)
        .payload(event.encode().into());
    let id = shared
        .js
        .send_publish(EVENTS_SUBJECT, msg)
        .await
        .map_err(|e| format!("the cluster did not take the job: {e}"))?
        .await
        .map_err(|e| format!("the cluster did not take the job: {e}"))?
        .sequence;
    let JobEvent::Submitted { submission, .. } = event else {
        return Ok(id);
    };
    let queued = async {
        let payload = serde_json::to_vec(&submission).map_err(|e| e.to_string())?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(JOB_ID_HEADER, id.to_string().as_str());
        let msg = jetstream::message::PublishMessage::build()
            .message_id(format!("job/{id}"))
            .headers(headers)
            .payload(payload.into());
        shared
            .js
            .send_publish(JOBS_SUBJECT, msg)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = queued.await {
        let why = format!("the cluster's work queue did not take it: {e}");
        let failed = JobEvent::Failed {
            id,
            why: why.clone(),
            at_ms: crate::cluster::now_ms(),
        };
        let _ = publish_event(shared, failed.encode()).await;
        return Err(why);
    }
    Ok(id)
}

/// One job from the queue, if one is waiting.
pub(super) async fn take_job(shared: &Shared) -> FromCluster {
    let fetched = shared
        .jobs
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await;
    let mut messages = match fetched {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, "could not take a job from the queue");
            return FromCluster::NoJob;
        }
    };
    let Some(Ok(msg)) = messages.next().await else {
        return FromCluster::NoJob;
    };
    let Ok(info) = msg.info() else {
        return FromCluster::NoJob;
    };
    let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(JOB_ID_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok());
    let Some(id) = id else {
        warn!(
            seq = info.stream_sequence,
            "a message on the work queue without its job id (put there by hand?); removed"
        );
        if let Err(e) = msg.ack_with(AckKind::Term).await {
            debug!(error = %e, "could not remove it");
        }
        return FromCluster::NoJob;
    };
    let submission = msg.payload.to_vec();
    let Ok(mut taken) = shared.taken.lock() else {
        return FromCluster::NoJob;
    };
    taken.next += 1;
    let handle = taken.next;
    taken.messages.insert(handle, msg);
    FromCluster::Job {
        handle,
        id,
        attempt,
        submission,
    }
}

/// Ends a taken job with `kind` (done, back in the queue, or failed for
/// good), telling every front-end `event` if there is one.
pub(super) async fn job_over(shared: &Shared, handle: u64, kind: AckKind, event: Option<Vec<u8>>) {
    let msg = shared
        .taken
        .lock()
        .ok()
        .and_then(|mut t| t.messages.remove(&handle));
    if let Some(event) = event {
        let _ = publish_event(shared, event).await;
    }
    let Some(msg) = msg else { return };
    let done = match kind {
        AckKind::Ack => msg.double_ack().await,
        other => msg.ack_with(other).await,
    };
    if let Err(e) = done {
        warn!(error = %e, "could not settle a job with the cluster; it is delivered again after its lease");
    }
}

/// Times a run's event is tried, a second apart, before it is given up
/// (the other front-ends then time its lease out and hand it out again).
pub(super) const EVENT_TRIES: usize = 10;

/// Puts `event` on the job events stream; why not (also logged) if the
/// cluster did not take it.
pub(super) async fn publish_event(shared: &Shared, event: Vec<u8>) -> Result<(), String> {
    let sent = match shared.js.publish(EVENTS_SUBJECT, event.into()).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &sent {
        warn!(error = %e, "could not record a job event in the cluster");
    }
    sent
}
