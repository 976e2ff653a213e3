//! Endpoint strings: validation and port arithmetic.

/// The port of a `tcp://HOST:PORT` endpoint.
pub fn port(endpoint: &str) -> Option<u16> {
    endpoint
        .strip_prefix("tcp://")?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

/// The host and port of a `tcp://HOST:PORT` endpoint (an IPv6 host
/// without its brackets), for a name lookup.
pub fn host_port(endpoint: &str) -> Option<(&str, u16)> {
    let (host, port) = endpoint.strip_prefix("tcp://")?.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// The file of an `ipc://PATH` endpoint (a Unix socket), as written.
pub fn ipc_path(endpoint: &str) -> Option<&str> {
    endpoint.strip_prefix("ipc://")
}

/// The same host as `endpoint` with another port: how an agent reaches the
/// hub's other sockets from the one address it was given.
pub fn with_port(endpoint: &str, port: u16) -> Option<String> {
    let (host, _) = endpoint.strip_prefix("tcp://")?.rsplit_once(':')?;
    Some(format!("tcp://{host}:{port}"))
}

/// Checks that `endpoint` is something libzmq can bind or connect, with a
/// message that says what to write instead.
pub fn validate(endpoint: &str, allow_wildcard_port: bool) -> Result<(), String> {
    if let Some(rest) = endpoint.strip_prefix("tcp://") {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(format!("{endpoint:?} has no port; write tcp://HOST:PORT"));
        };
        if host.is_empty() {
            return Err(format!("{endpoint:?} has no host; write tcp://HOST:PORT"));
        }
        if port == "*" || port == "0" {
            return if allow_wildcard_port {
                Ok(())
            } else {
                Err(format!("{endpoint:?} needs a real port to connect to"))
            };
        }
        return match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(format!(
                "{endpoint:?} has port {port:?}; use 1-65535 (or * to let the OS pick when binding)"
            )),
        };
    }
    if ipc_path(endpoint).is_some() || endpoint.starts_with("inproc://") {
        return Ok(());
    }
    Err(format!(
        "{endpoint:?} is not a ZeroMQ endpoint; write tcp://HOST:PORT (or ipc://PATH)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_come_apart_for_a_lookup() {
        assert_eq!(host_port("tcp://hub.lan:7750"), Some(("hub.lan", 7750)));
        assert_eq!(host_port("tcp://[::1]:7750"), Some(("::1", 7750)));
        assert_eq!(host_port("tcp://hub.lan:*"), None);
        assert_eq!(host_port("ipc:///x"), None);
        assert_eq!(ipc_path("ipc:///x"), Some("/x"));
        assert_eq!(ipc_path("tcp://hub.lan:7750"), None);
    }

    #[test]
    fn ports_are_read_and_swapped() {
        assert_eq!(port("tcp://127.0.0.1:5000"), Some(5000));
        assert_eq!(port("tcp://[::1]:5000"), Some(5000));
        assert_eq!(port("ipc:///x"), None);
        assert_eq!(
            with_port("tcp://hub.lan:7750", 7752).as_deref(),
            Some("tcp://hub.lan:7752")
        );
        assert_eq!(
            with_port("tcp://[::1]:1", 2).as_deref(),
            Some("tcp://[::1]:2")
        );
    }

    #[test]
    fn validation_explains_what_to_write() {
        assert!(validate("tcp://0.0.0.0:*", true).is_ok());
        assert!(validate("tcp://0.0.0.0:*", false).is_err());
        assert!(
            validate("tcp://h:99999", true)
                .unwrap_err()
                .contains("1-65535")
        );
        assert!(
            validate("127.0.0.1:80", true)
                .unwrap_err()
                .contains("tcp://HOST:PORT")
        );
        assert!(
            validate("tcp://hostonly", true)
                .unwrap_err()
                .contains("no port")
        );
    }
}
