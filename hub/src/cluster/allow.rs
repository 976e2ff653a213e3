//! The allow list across front-ends: one entry per device in the bucket
//! [`ALLOW_BUCKET`] (its keys, one per line), watched by every front-end.
//! Each front-end's allow list file mirrors the bucket; an edit of any
//! front-end's file (`fleetmq-hub allow`, `revoke`, or by hand) goes to
//! the bucket, and from there to every front-end within a second.

use std::collections::{BTreeMap, BTreeSet};

use crate::enrolment::AllowList;

/// Enrolled devices and their keys.
pub const ALLOW_BUCKET: &str = "fleetmq_allow";

/// Each enrolled device's keys.
pub type Enrolled = BTreeMap<String, BTreeSet<String>>;

/// `list` by device.
pub fn enrolled(list: &AllowList) -> Enrolled {
    let mut out = Enrolled::new();
    for (device, key) in list.pairs() {
        out.entry(device.to_string())
            .or_default()
            .insert(key.to_string());
    }
    out
}

/// `enrolled` as an allow list, and the keys left out because another
/// device has them.
pub fn allow_list(enrolled: &Enrolled) -> (AllowList, Vec<(String, String)>) {
    AllowList::from_pairs(
        enrolled
            .iter()
            .flat_map(|(d, keys)| keys.iter().map(move |k| (d.as_str(), k.as_str()))),
    )
}

/// The devices whose keys differ from `old` to `new`, each with its keys
/// in `new` (none: no longer enrolled).
pub fn changes(old: &Enrolled, new: &Enrolled) -> Vec<(String, Vec<String>)> {
    let devices: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    devices
        .into_iter()
        .filter(|d| old.get(*d) != new.get(*d))
        .map(|d| {
            let keys = new.get(d).map(|k| k.iter().cloned().collect());
            (d.clone(), keys.unwrap_or_default())
        })
        .collect()
}

/// A device's keys as the bucket holds them.
pub fn value(keys: &[String]) -> Vec<u8> {
    keys.join("\n").into_bytes()
}

/// The keys in a bucket value; lines that are not keys are skipped.
pub fn keys_in(value: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(value)
        .lines()
        .map(str::trim)
        .filter(|k| fleetmq_net::keys::check(k).is_ok())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    const K2: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

    fn of(pairs: &[(&str, &str)]) -> Enrolled {
        enrolled(&AllowList::from_pairs(pairs.iter().copied()).0)
    }

    #[test]
    fn changes_name_each_device_whose_keys_differ_with_its_keys_now() {
        let old = of(&[("pi-1", K1), ("pi-2", K2)]);
        let new = of(&[("pi-1", K1), ("pi-1", K2)]);
        assert_eq!(
            changes(&old, &new),
            vec![
                // Keys in order.
                ("pi-1".to_string(), vec![K2.to_string(), K1.to_string()]),
                ("pi-2".to_string(), vec![]),
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }

    #[test]
    fn bucket_values_round_trip_and_a_key_stays_one_devices() {
        let keys = vec![K1.to_string(), K2.to_string()];
        assert_eq!(keys_in(&value(&keys)), keys.iter().cloned().collect());
        assert!(keys_in(b"not a key\n").is_empty());
        let mut e = of(&[("pi-1", K1)]);
        e.entry("pi-9".into()).or_default().insert(K1.into());
        let (list, clashes) = allow_list(&e);
        assert_eq!(list.device(K1), Some("pi-1"));
        assert_eq!(clashes, vec![("pi-9".to_string(), K1.to_string())]);
    }
}
