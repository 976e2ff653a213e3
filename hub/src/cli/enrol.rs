//! `allow` and `revoke`: who gets in. Each edits the allow list file on the
//! hub's machine, or with `--hub` asks a running hub to edit its own (the
//! operator requests `Enrol` and `Revoke`): an admin operator on another
//! machine enrols a waiting device, or cuts off a lost one, without a
//! login on the hub's.

use std::process::ExitCode;
use std::time::Duration;

use fleetmq_net::keys::{key_or_file, quoted};
use fleetmq_protocol::{Enrolment, Request, Response, Revocation};

use super::ask::{Exit, Shown, operate};
use super::{AllowArgs, AtHubArgs, EnrolArgs, OpArgs, RevokeArgs, allow_list, say, usage};
use crate::enrolment::{self, Edit};

/// `fleetmq-hub allow DEVICE KEY`.
pub(super) fn allow(a: AllowArgs) -> anyhow::Result<ExitCode> {
    if a.remote.hub.is_some() {
        return allow_at_hub(a);
    }
    on_this_machine(&a.remote)?;
    let path = allow_list(&a.at)?;
    fleetmq_protocol::validate_device_id(&a.device).map_err(|e| usage(&e.to_string()))?;
    let key = key_or_file(&a.key)?;
    let device = &a.device;
    let groups = a
        .groups
        .as_deref()
        .map(enrolment::parse_group_list)
        .transpose()
        .map_err(|why| usage(&format!("--groups: {why}")))?;
    let edit = enrolment::allow(&path, device, &key, groups.as_deref())?;
    let result = edit.enrolled_word();
    let (others, text) = match edit {
        Edit::AlreadyThere => (
            Vec::new(),
            format!("{device} is already enrolled with this key\n"),
        ),
        Edit::Regrouped => (
            Vec::new(),
            format!(
                "pinned {device}'s groups in {}: {}; a running hub applies them within a second\n",
                path.display(),
                enrolment::groups_word(groups.as_deref().unwrap_or_default())
            ),
        ),
        Edit::Added { others } if !others.is_empty() => {
            let mut text = format!(
                "enrolled another key for {device} in {}: it has {} now, and each gets in\n",
                path.display(),
                others.len() + 1
            );
            for old in &others {
                text.push_str(&format!(
                    "once {device} uses the new key, revoke the old one: fleetmq-hub revoke {device} --key {}\n",
                    quoted(old)
                ));
            }
            (others, text)
        }
        _ => (
            Vec::new(),
            format!("enrolled {device} in {}\n", path.display()),
        ),
    };
    say(
        a.at.json,
        serde_json::json!({
            "device": device,
            "result": result,
            "allow_list": path,
            "other_keys": others,
            "groups": groups,
        }),
        text,
    );
    Ok(ExitCode::SUCCESS)
}

/// `fleetmq-hub revoke DEVICE [--key KEY]`.
pub(super) fn revoke(a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let key = a.key.as_deref().map(key_or_file).transpose()?;
    if a.remote.hub.is_some() {
        return revoke_at_hub(a, key);
    }
    on_this_machine(&a.remote)?;
    let path = allow_list(&a.at)?;
    match enrolment::revoke(&path, &a.device, key.as_deref())? {
        Edit::Removed(n) => {
            say(
                a.at.json,
                serde_json::json!({ "device": a.device, "removed_keys": n, "allow_list": path }),
                format!(
                    "revoked {} ({n} key(s)) in {}; a running hub cuts it off within a second\n",
                    a.device,
                    path.display()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let what = enrolment::revoked_words(&a.device, key.as_deref());
            let e = format!("{what} is not on {}", path.display());
            if a.at.json {
                println!("{}", serde_json::json!({ "error": e }));
            }
            eprintln!("error: {e}");
            Ok(Exit::No.into())
        }
    }
}

/// Without `--hub` the command edits the file here: the flags that say
/// how to reach a hub are a mistake.
fn on_this_machine(remote: &AtHubArgs) -> anyhow::Result<()> {
    if remote.hub_key.is_some() || remote.operator_keys.is_some() {
        return Err(usage(
            "--hub-key and --operator-keys go with --hub (editing the allow list through a running hub's operator socket); without it the command edits the allow list file",
        ));
    }
    Ok(())
}

/// Asks the hub `--hub` names, and shows its answer.
fn ask_hub(
    at: EnrolArgs,
    remote: AtHubArgs,
    request: Request,
    show: impl FnOnce(Response) -> Option<Shown>,
) -> anyhow::Result<ExitCode> {
    let op = OpArgs {
        hub: remote.hub,
        config: at.config,
        data_dir: at.data_dir,
        json: at.json,
        hub_timeout_ms: 2_000,
        hub_key: remote.hub_key,
        operator_keys: remote.operator_keys,
    };
    operate(&op, request, Duration::ZERO, show)
}

fn allow_at_hub(a: AllowArgs) -> anyhow::Result<ExitCode> {
    if a.groups.is_some() {
        return Err(usage(
            "--groups with --hub: pinning groups edits the allow list on the hub's machine (fleetmq-hub allow --groups there)",
        ));
    }
    let public_key = key_or_file(&a.key)?;
    let device = a.device;
    let request = Request::Enrol(Enrolment {
        device: device.clone(),
        public_key,
    });
    ask_hub(a.at, a.remote, request, |r| match r {
        Response::Enrolled { result } => {
            let text = match result.as_str() {
                "already_enrolled" => format!("{device} is already enrolled with this key\n"),
                "enrolled_another_key" => format!(
                    "enrolled another key for {device}: it has more than one now, and each gets in; once it uses the new one, revoke the old: fleetmq-hub revoke {device} --key OLD --hub ...\n"
                ),
                _ => format!("enrolled {device}: it gets in at its next try\n"),
            };
            let json = serde_json::json!({ "device": device, "result": result });
            Some(Shown::new(json, text, true))
        }
        _ => None,
    })
}

fn revoke_at_hub(a: RevokeArgs, public_key: Option<String>) -> anyhow::Result<ExitCode> {
    let device = a.device;
    let request = Request::Revoke(Revocation {
        device: device.clone(),
        public_key,
    });
    ask_hub(a.at, a.remote, request, |r| match r {
        Response::Revoked { removed_keys } => {
            let text = format!(
                "revoked {device} ({removed_keys} key(s)): the hub cuts it off and refuses it from now on\n"
            );
            let json = serde_json::json!({ "device": device, "removed_keys": removed_keys });
            Some(Shown::new(json, text, true))
        }
        _ => None,
    })
}
