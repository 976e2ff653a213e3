//! Structs that may gain fields, written so that a reader of another
//! version still reads them: each is a postcard byte string (a varint
//! length, then the struct's own postcard bytes). A reader takes the fields
//! it knows from those bytes, ignores any after them (a newer writer added
//! fields), and reads fields missing at the end as zero values: 0, false,
//! an empty string or list, `None`, an enum's first variant (an older
//! writer did not have them).
//!
//! Used with `#[serde(with = "growable")]` (one struct) and
//! `#[serde(with = "growable::list")]` (a `Vec` of them) on the operator
//! messages and `AgentStatus`. In a human-readable format (the command
//! line's and the HTTP side's JSON) the struct is written as itself.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Zero bytes appended for fields an older writer did not have; each
/// missing field takes at least one, and no growable struct has this many.
const PAD: usize = 256;

/// Encodes `value` as its own postcard bytes.
fn to_bytes<T: Serialize, E: serde::ser::Error>(value: &T) -> Result<Vec<u8>, E> {
    postcard::to_allocvec(value).map_err(E::custom)
}

/// Decodes a growable struct from its bytes, by the rule above.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, _newer_fields)) => Ok(value),
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            let mut padded = Vec::with_capacity(bytes.len() + PAD);
            padded.extend_from_slice(bytes);
            padded.resize(bytes.len() + PAD, 0);
            postcard::take_from_bytes::<T>(&padded).map(|(value, _)| value)
        }
        Err(e) => Err(e),
    }
}

/// Writes one growable struct.
pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        return value.serialize(s);
    }
    s.serialize_bytes(&to_bytes::<T, S::Error>(value)?)
}

/// Reads one growable struct.
pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    if d.is_human_readable() {
        return T::deserialize(d);
    }
    let bytes = <&[u8]>::deserialize(d)?;
    from_bytes(bytes).map_err(D::Error::custom)
}

/// The same for a `Vec` of growable structs: a count, then each as above.
pub mod list {
    use super::*;

    /// One element, as bytes.
    struct Item<'a, T>(&'a T);

    impl<T: Serialize> Serialize for Item<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }

    /// Writes a list of growable structs.
    pub fn serialize<T: Serialize, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return items.serialize(s);
        }
        s.collect_seq(items.iter().map(Item))
    }

    /// Reads a list of growable structs.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        if d.is_human_readable() {
            return Vec::<T>::deserialize(d);
        }
        let raw: Vec<&[u8]> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|b| from_bytes(b).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Old {
        a: u32,
        b: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct New {
        a: u32,
        b: String,
        c: bool,
        d: Option<u64>,
        e: Vec<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder<T: Serialize + serde::de::DeserializeOwned> {
        #[serde(with = "super::list")]
        items: Vec<T>,
        after: u8,
    }

    #[test]
    fn an_older_reader_skips_new_fields_and_a_newer_one_zeroes_missing_ones() {
        let new = Holder {
            items: vec![
                New {
                    a: 1,
                    b: "x".into(),
                    c: true,
                    d: Some(9),
                    e: vec!["y".into()],
                },
                New {
                    a: 2,
                    b: String::new(),
                    c: false,
                    d: None,
                    e: vec![],
                },
            ],
            after: 7,
        };
        let bytes = postcard::to_allocvec(&new).unwrap();
        let old: Holder<Old> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            old.items,
            vec![
                Old {
                    a: 1,
                    b: "x".into()
                },
                Old {
                    a: 2,
                    b: String::new()
                }
            ]
        );
        assert_eq!(old.after, 7, "what follows the list is read as written");

        let old_bytes = postcard::to_allocvec(&old).unwrap();
        let read: Holder<New> = postcard::from_bytes(&old_bytes).unwrap();
        assert_eq!(
            read.items[0],
            New {
                a: 1,
                b: "x".into(),
                c: false,
                d: None,
                e: vec![]
            }
        );
        assert_eq!(read.after, 7);
        // Each element is its length, then its bytes.
        assert_eq!(&bytes[..2], &[2, 9], "two items, the first 9 bytes long");
    }

    #[test]
    fn json_shows_the_struct_itself() {
        let h = Holder {
            items: vec![Old {
                a: 1,
                b: "x".into(),
            }],
            after: 0,
        };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"items":[{"a":1,"b":"x"}],"after":0}"#
        );
    }
}
