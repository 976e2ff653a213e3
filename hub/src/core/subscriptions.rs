//! What a device on five sockets may hear on the broadcast socket.
//!
//! An agent's SUB subscribes to topics, and libzmq's XPUB would apply any
//! prefix a peer asks for, the empty one (every topic) included. The
//! hub's XPUB is manual: it passes each subscription up and applies only
//! those the core allows here. On CURVE, a device may hear `all/`,
//! `chat/`, its own `dev/ID/`, and `group/G/` for its groups: the groups
//! the allow list pins it to, or any group for a device the list does not
//! pin (such a device names its own groups in its Hello). Anything else is
//! refused: another device's topic, a group outside the pin, and a prefix
//! that is not one whole topic. Each refusal is counted
//! (`subscriptions_refused`) and the first for a device is logged. A
//! plaintext hub believes everyone and applies everything.
//!
//! The end of a subscription is always applied: it takes nothing away
//! that the device was not given.

use fleetmq_protocol::{names, validate_device_id, validate_group};
use tracing::{debug, warn};

use super::Core;

/// The name inside a whole topic `PREFIX NAME/`, such as the id in
/// `dev/pi-1/`.
fn inside<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    topic.strip_prefix(prefix)?.strip_suffix('/')
}

/// Why `device`, pinned to `pinned` groups if the allow list pins them,
/// may not hear `topic`; `Ok` when it may.
pub(super) fn may_hear(
    device: &str,
    pinned: Option<&[String]>,
    topic: &[u8],
) -> Result<(), &'static str> {
    let Ok(topic) = std::str::from_utf8(topic) else {
        return Err("it is not a topic");
    };
    if topic == names::ALL_TOPIC || topic == names::CHAT_TOPIC {
        return Ok(());
    }
    if let Some(id) = inside(topic, "dev/") {
        return if id == device {
            Ok(())
        } else {
            Err("it is another device's topic")
        };
    }
    if let Some(group) = inside(topic, "group/").filter(|g| validate_group(g).is_ok()) {
        return match pinned {
            Some(groups) if !groups.iter().any(|g| g == group) => {
                Err("the allow list does not pin the device to that group")
            }
            _ => Ok(()),
        };
    }
    Err("it is not one whole topic, and a prefix hears every topic that starts with it")
}

impl Core {
    /// The broadcast socket passed up a subscription or its end (`1` or
    /// `0`, then the topic), from a connection of `user_id` (the device
    /// ZAP named; none on a plaintext hub, or for the ends libzmq makes
    /// itself when a connection closes). Returns whether the socket is to
    /// apply it.
    ///
    /// A device's own `dev/ID/` topic also says whether it listens; on
    /// CURVE only the device's own subscription counts.
    pub fn subscription(&mut self, frame: &[u8], user_id: Option<&str>) -> bool {
        let (on, topic) = match frame.split_first() {
            Some((1, t)) => (true, t),
            Some((0, t)) => (false, t),
            _ => return false,
        };
        if on && self.admission.secure() {
            let enrolled = user_id.filter(|u| !self.admission.is_revoked(u));
            let verdict = match enrolled {
                Some(device) => may_hear(device, self.admission.groups_of(device), topic),
                None => Err("its connection is not an enrolled device's"),
            };
            if let Err(why) = verdict {
                self.counters.subscriptions_refused += 1;
                let device = enrolled.unwrap_or("nobody");
                let topic = String::from_utf8_lossy(topic);
                if self.admission.first_time(format!("subscription {device}")) {
                    warn!(
                        device,
                        %topic,
                        "refused a broadcast subscription: {why} (an agent of this release subscribes to the groups the hub pins; an older one to the groups in its config, so make them the ones fleetmq-hub allow --groups pins)"
                    );
                } else {
                    debug!(device, %topic, why, "refused a broadcast subscription");
                }
                return false;
            }
        }
        let listening = std::str::from_utf8(topic)
            .ok()
            .and_then(|t| inside(t, "dev/"));
        if let Some(device) = listening {
            let own = !self.admission.secure() || user_id == Some(device);
            if validate_device_id(device).is_ok() && own {
                debug!(device, on, "broadcast subscription");
                self.presence.set_listening(device, on);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_device_hears_everyones_topics_and_its_own() {
        for topic in ["all/", "chat/", "dev/pi-1/"] {
            assert_eq!(may_hear("pi-1", None, topic.as_bytes()), Ok(()), "{topic}");
            let pinned = groups(&[]);
            assert_eq!(
                may_hear("pi-1", Some(&pinned), topic.as_bytes()),
                Ok(()),
                "{topic}, pinned to no group"
            );
        }
    }

    #[test]
    fn another_devices_topic_is_refused_even_one_that_starts_alike() {
        assert!(may_hear("pi-1", None, b"dev/pi-2/").is_err());
        assert!(may_hear("pi-1", None, b"dev/pi-10/").is_err());
        assert!(may_hear("pi-10", None, b"dev/pi-1/").is_err());
    }

    #[test]
    fn a_pinned_device_hears_its_pinned_groups_only() {
        let pinned = groups(&["north", "barns"]);
        assert_eq!(may_hear("pi-1", Some(&pinned), b"group/north/"), Ok(()));
        assert_eq!(may_hear("pi-1", Some(&pinned), b"group/barns/"), Ok(()));
        assert!(may_hear("pi-1", Some(&pinned), b"group/south/").is_err());
        assert!(may_hear("pi-1", Some(&groups(&[])), b"group/north/").is_err());
    }

    #[test]
    fn a_device_the_list_does_not_pin_hears_any_group_it_names() {
        assert_eq!(may_hear("pi-1", None, b"group/south/"), Ok(()));
        assert!(
            may_hear("pi-1", None, b"group/a/b/").is_err(),
            "not a group name"
        );
    }

    #[test]
    fn a_prefix_that_is_not_one_whole_topic_is_refused() {
        for prefix in [
            &b""[..],
            b"a",
            b"all",
            b"group/",
            b"group/nor",
            b"dev/",
            b"dev/pi-1",
            b"dev/pi-1/x",
            b"chat/x",
            b"\xff",
        ] {
            assert!(
                may_hear("pi-1", None, prefix).is_err(),
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }
}
