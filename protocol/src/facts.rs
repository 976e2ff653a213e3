//! The bounds of [`DeviceFacts`]: what an agent sends stays within them,
//! and a hub keeps no facts past them (a device's jobs and telemetry go on
//! either way).

use crate::messages::DeviceFacts;

/// Each text in the facts (a field, an interface's name, hardware
/// address or IP address), in bytes.
pub const FACTS_MAX_TEXT: usize = 128;
/// Interfaces listed.
pub const FACTS_MAX_INTERFACES: usize = 32;
/// Addresses listed for one interface.
pub const FACTS_MAX_ADDRESSES: usize = 16;

impl DeviceFacts {
    /// Whether nothing is known: an agent of a release before facts, or
    /// one that could read none.
    pub fn is_empty(&self) -> bool {
        *self == DeviceFacts::default()
    }

    /// Whether the facts are within their bounds: none past them, no
    /// control characters; if not, which is wrong.
    pub fn check(&self) -> Result<(), String> {
        let text = |what: &str, t: &str| {
            if t.len() > FACTS_MAX_TEXT {
                Err(format!("{what} is over {FACTS_MAX_TEXT} bytes"))
            } else if t.chars().any(char::is_control) {
                Err(format!("{what} has a control character"))
            } else {
                Ok(())
            }
        };
        text("os_release", &self.os_release)?;
        text("kernel", &self.kernel)?;
        text("model", &self.model)?;
        text("serial", &self.serial)?;
        if self.interfaces.len() > FACTS_MAX_INTERFACES {
            return Err(format!("over {FACTS_MAX_INTERFACES} interfaces"));
        }
        for i in &self.interfaces {
            text("an interface's name", &i.name)?;
            text("an interface's mac", &i.mac)?;
            if i.addresses.len() > FACTS_MAX_ADDRESSES {
                return Err(format!(
                    "interface {} has over {FACTS_MAX_ADDRESSES} addresses",
                    i.name
                ));
            }
            for a in &i.addresses {
                text("an address", a)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Interface;

    #[test]
    fn facts_past_their_bounds_are_named() {
        let mut facts = DeviceFacts {
            kernel: "6.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:ff".into(),
                addresses: vec!["10.0.0.2/8".into()],
            }],
            ..DeviceFacts::default()
        };
        assert_eq!(facts.check(), Ok(()));
        facts.model = "x".repeat(FACTS_MAX_TEXT + 1);
        assert_eq!(facts.check(), Err("model is over 128 bytes".into()));
        facts.model = "Pi\n".into();
        assert_eq!(facts.check(), Err("model has a control character".into()));
        facts.model.clear();
        facts.interfaces[0].addresses = vec!["10.0.0.2/8".into(); FACTS_MAX_ADDRESSES + 1];
        assert_eq!(
            facts.check(),
            Err("interface eth0 has over 16 addresses".into())
        );
        facts.interfaces = vec![Interface::default(); FACTS_MAX_INTERFACES + 1];
        assert_eq!(facts.check(), Err("over 32 interfaces".into()));
    }
}
