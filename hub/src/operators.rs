//! The operator allow list: who may use the remote operator socket, and
//! with which role. Kept apart from the devices' allow list: an operator's
//! key is never a device's, and a device's key never reaches the operator
//! socket (its handshakes are asked about under another ZAP domain).
//!
//! One operator per line, `NAME ROLE PUBLIC_KEY`:
//!
//! ```text
//! # comments start with '#'
//! alice  admin  rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
//! grafana read  Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID
//! ```
//!
//! `read` may list devices, read telemetry, chat, jobs, the command log and
//! stats; `admin` may also send commands, submit jobs and broadcast. The
//! running hub reads the file again when it changes.

use std::collections::HashMap;
use std::path::Path;

use fleetmq_protocol::{Request, validate_operator_name};

use crate::enrolment::AllowError;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads only.
    Read,
    /// Reads, and acts on the fleet.
    Admin,
}

/// Whether `request` acts on the fleet (a read operator may not make it,
/// and the audit trail keeps it) rather than reads. Every request is
/// named, so that a new one must be placed as a read or an act here.
pub fn acts(request: &Request) -> bool {
    match request {
        Request::Devices
        | Request::Telemetry(_)
        | Request::Chat(_)
        | Request::Job { .. }
        | Request::Jobs { .. }
        | Request::Stats
        | Request::Latest
        | Request::RecentChat { .. }
        | Request::Commands { .. }
        | Request::FleetAnswers { .. }
        | Request::FleetCommands { .. }
        | Request::ConfigShow { .. }
        | Request::ConfigStatus
        | Request::Alerts
        | Request::PresenceLog { .. }
        | Request::LatestOf { .. }
        | Request::Logs(_)
        | Request::Pending
        | Request::Audit { .. } => false,
        Request::Command { .. }
        | Request::QueuedCommand { .. }
        | Request::SubmitJob(_)
        | Request::CancelJob { .. }
        | Request::CancelCommand { .. }
        | Request::Broadcast { .. }
        | Request::FleetCommand(_)
        | Request::ConfigEdit(_)
        | Request::Forget { .. }
        | Request::Enrol(_)
        | Request::Revoke(_) => true,
    }
}

impl Role {
    /// Whether this role may make `request`.
    pub fn may(self, request: &Request) -> bool {
        self == Role::Admin || !acts(request)
    }

    fn parse(word: &str) -> Option<Role> {
        match word {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// ZAP user ids of operators start with this; device ids cannot hold `:`.
const USER_PREFIX: &str = "operator:";

/// The ZAP user id of operator `name` with `role`: `operator:ROLE:NAME`.
pub fn user_id(name: &str, role: Role) -> String {
    format!("{USER_PREFIX}{}:{name}", role.name())
}

/// The operator name and role a ZAP user id names, if it is an operator's.
pub fn from_user_id(user: &str) -> Option<(&str, Role)> {
    let (role, name) = user.strip_prefix(USER_PREFIX)?.split_once(':')?;
    Some((name, Role::parse(role)?))
}

/// The operators allowed on the remote operator socket, by public key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operators {
    by_key: HashMap<String, (String, Role)>,
}

impl Operators {
    /// Parses the file's text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AllowError> {
        let mut by_key = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |why: String| AllowError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = entry.split_whitespace().collect();
            let [name, role, key] = words[..] else {
                return Err(err(format!(
                    "{entry:?} is not NAME ROLE PUBLIC_KEY (three words; ROLE is read or admin)"
                )));
            };
            validate_operator_name(name).map_err(|e| err(e.to_string()))?;
            let role = Role::parse(role)
                .ok_or_else(|| err(format!("role {role:?} is not read or admin")))?;
            fleetmq_net::keys::check(key)
                .map_err(|why| err(format!("the key for {name}: {why}")))?;
            if let Some((other, _)) = by_key.get(key) {
                return Err(err(format!(
                    "this key is already {other}'s; a key belongs to one operator"
                )));
            }
            by_key.insert(key.to_string(), (name.to_string(), role));
        }
        Ok(Operators { by_key })
    }

    /// Reads the file; a missing file allows no one.
    pub fn load(path: &Path) -> Result<Self, AllowError> {
        match fleetmq_net::files::read_capped(path, crate::enrolment::LIST_FILE_MAX) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Operators::default()),
            Err(source) => Err(AllowError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The operator this key belongs to, with its role.
    pub fn operator(&self, key: &str) -> Option<(&str, Role)> {
        self.by_key.get(key).map(|(n, r)| (n.as_str(), *r))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_each_operator_with_a_role_and_refuses_mistakes() {
        let a = fleetmq_net::keys::generate().unwrap().public;
        let b = fleetmq_net::keys::generate().unwrap().public;
        let path = Path::new("allowed_operators");
        let text = format!("# ops\nalice admin {a}\n\ngrafana read {b}\n");
        let ops = Operators::parse(path, &text).unwrap();
        assert_eq!(ops.operator(&a), Some(("alice", Role::Admin)));
        assert_eq!(ops.operator(&b), Some(("grafana", Role::Read)));
        assert_eq!(ops.len(), 2);

        let bad = |text: String| Operators::parse(path, &text).unwrap_err().to_string();
        assert!(
            bad(format!("alice {a}")).contains("line 1: \"alice"),
            "two words"
        );
        assert!(bad(format!("alice root {a}")).contains("\"root\" is not read or admin"));
        assert!(bad("alice admin nokey".into()).contains("the key for alice"));
        assert!(bad(format!("al/ice admin {a}")).contains("operator name"));
        assert!(
            bad(format!("a admin {a}\nb read {a}")).contains("line 2: this key is already a's")
        );
        let missing = Operators::load(Path::new("/nonexistent/allowed_operators")).unwrap();
        assert!(missing.is_empty(), "a missing file allows no one");
    }

    #[test]
    fn a_read_operator_may_read_but_not_act() {
        use fleetmq_protocol::{Command, Target};
        let command = Request::Command {
            device: "pi".into(),
            command: Command::Ping,
            timeout_ms: 0,
        };
        let broadcast = Request::Broadcast {
            target: Target::All,
            text: "x".into(),
        };
        for read in [Request::Devices, Request::Stats, Request::Jobs { limit: 1 }] {
            assert!(Role::Read.may(&read), "{read:?}");
        }
        let cancel = Request::CancelJob { id: 1 };
        assert!(!Role::Read.may(&command));
        assert!(!Role::Read.may(&broadcast));
        assert!(!Role::Read.may(&cancel), "cancelling a job acts");
        assert!(!Role::Read.may(&Request::CancelCommand { id: 1 }));
        let forget = Request::Forget {
            device: "pi".into(),
        };
        assert!(!Role::Read.may(&forget), "forgetting a device acts");
        assert!(Role::Admin.may(&forget));
        assert!(
            Role::Admin.may(&command) && Role::Admin.may(&broadcast) && Role::Admin.may(&cancel)
        );
    }

    #[test]
    fn an_operators_user_id_never_looks_like_a_device() {
        let id = user_id("alice", Role::Read);
        assert_eq!(id, "operator:read:alice");
        assert!(fleetmq_protocol::validate_device_id(&id).is_err());
        assert_eq!(from_user_id(&id), Some(("alice", Role::Read)));
        assert_eq!(from_user_id("pi-1"), None);
        assert_eq!(from_user_id("operator:root:x"), None);
    }
}
