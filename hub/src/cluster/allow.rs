//! The allow list across front-ends: one entry per device in the bucket
//! [`ALLOW_BUCKET`] (its keys, one per line, and the `groups=` word of a
//! device whose groups the list pins), watched by every front-end.
//! Each front-end's allow list file mirrors the bucket; an edit of any
//! front-end's file (`fleetmq-hub allow`, `revoke`, or by hand) goes to
//! the bucket, and from there to every front-end within a second.

use std::collections::{BTreeMap, BTreeSet};

use crate::enrolment::{AllowList, GROUPS_WORD, groups_word, parse_groups};

/// Enrolled devices and their keys.
pub const ALLOW_BUCKET: &str = "fleetmq_allow";

/// Each enrolled device's words: its keys, and a `groups=` word if the
/// list pins its groups.
pub type Enrolled = BTreeMap<String, BTreeSet<String>>;

/// `list` by device.
pub fn enrolled(list: &AllowList) -> Enrolled {
    let mut out = Enrolled::new();
    for (device, key) in list.pairs() {
        out.entry(device.to_string())
            .or_default()
            .insert(key.to_string());
    }
    for (device, groups) in list.pinned() {
        if let Some(words) = out.get_mut(device) {
            words.insert(groups_word(groups));
        }
    }
    out
}

/// `enrolled` as an allow list, and the keys left out because another
/// device has them.
pub fn allow_list(enrolled: &Enrolled) -> (AllowList, Vec<(String, String)>) {
    let is_key = |w: &&String| !w.starts_with(GROUPS_WORD);
    let (mut list, clashes) = AllowList::from_pairs(enrolled.iter().flat_map(|(d, words)| {
        words
            .iter()
            .filter(is_key)
            .map(move |k| (d.as_str(), k.as_str()))
    }));
    for (device, words) in enrolled {
        // keys_in kept only words that parse.
        if let Some(Ok(groups)) = words.iter().find(|w| !is_key(w)).map(|w| parse_groups(w)) {
            list.pin(device, groups);
        }
    }
    (list, clashes)
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

/// The words in a bucket value: keys, and the first `groups=` word that
/// parses; other lines are skipped.
pub fn keys_in(value: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(value);
    let lines = text.lines().map(str::trim);
    let mut words: BTreeSet<String> = lines
        .clone()
        .filter(|k| fleetmq_net::keys::check(k).is_ok())
        .map(String::from)
        .collect();
    if let Some(groups) = lines.filter_map(|w| parse_groups(w).ok()).next() {
        words.insert(groups_word(&groups));
    }
    words
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

    #[test]
    fn pinned_groups_travel_with_the_devices_keys() {
        let text = format!("pi-1 {K1} groups=north,barns\npi-1 {K2}\n");
        let list = AllowList::parse(std::path::Path::new("allow"), &text).unwrap();
        let e = enrolled(&list);
        let words: Vec<String> = e["pi-1"].iter().cloned().collect();
        let value = value(&words);
        let back: Enrolled = [("pi-1".to_string(), keys_in(&value))].into();
        let (mirrored, _) = allow_list(&back);
        assert_eq!(mirrored, list);
        let pinned = ["barns".to_string(), "north".to_string()];
        assert_eq!(mirrored.groups_of("pi-1"), Some(&pinned[..]));
        // Re-pinning is a change of the device's entry.
        let other = AllowList::parse(
            std::path::Path::new("allow"),
            &format!("pi-1 {K1} groups=south\npi-1 {K2}\n"),
        )
        .unwrap();
        assert_eq!(changes(&e, &enrolled(&other)).len(), 1);
        // A groups line that does not parse pins nothing.
        let bad = format!("{K1}\ngroups=no/slash\n");
        assert_eq!(keys_in(bad.as_bytes()), [K1.to_string()].into());
    }
}
