//! `allow --hub`: an admin operator on another machine enrols a device
//! through a running hub's operator socket (the operator request `Enrol`),
//! and the hub edits its own allow list file.

use std::process::ExitCode;
use std::time::Duration;

use fleetmq_protocol::{Enrolment, Request, Response};

use super::ask::{Shown, operate};
use super::{AllowArgs, OpArgs};

pub(super) fn enrol_at_hub(a: AllowArgs) -> anyhow::Result<ExitCode> {
    if a.groups.is_some() {
        return Err(super::usage(
            "--groups with --hub: pinning groups edits the allow list on the hub's machine (fleetmq-hub allow --groups there)",
        ));
    }
    let public_key = fleetmq_net::keys::key_or_file(&a.key)?;
    let op = OpArgs {
        hub: a.hub,
        config: a.at.config,
        data_dir: a.at.data_dir,
        json: a.at.json,
        hub_timeout_ms: 2_000,
        hub_key: a.hub_key,
        operator_keys: a.operator_keys,
    };
    let device = a.device;
    let request = Request::Enrol(Enrolment {
        device: device.clone(),
        public_key,
    });
    operate(&op, request, Duration::ZERO, |r| match r {
        Response::Enrolled { result } => {
            let text = match result.as_str() {
                "already_enrolled" => format!("{device} is already enrolled with this key\n"),
                "enrolled_another_key" => format!(
                    "enrolled another key for {device}: it has more than one now, and each gets in; revoke the old one on the hub's machine once it uses the new\n"
                ),
                _ => format!("enrolled {device}: it gets in at its next try\n"),
            };
            let json = serde_json::json!({ "device": device, "result": result });
            Some(Shown::new(json, text, true))
        }
        _ => None,
    })
}
