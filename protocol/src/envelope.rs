//! The envelope around every message frame.
//!
//! ```text
//! +------------+---------+---------------------------+
//! | version u8 | kind u8 | postcard body (kind's type) |
//! +------------+---------+---------------------------+
//! ```
//!
//! The version is checked first; a frame of another version is refused with
//! [`DecodeError::UnsupportedVersion`] and nothing else of it is read. The kind
//! byte selects the body's type within a channel (see [`crate::messages`]).
//! The body must be consumed exactly: trailing bytes are an error, so two
//! implementations cannot silently disagree about a layout.

use serde::{Serialize, de::DeserializeOwned};

/// The wire version this crate speaks.
pub const VERSION: u8 = 2;

/// Why a frame could not be decoded. Never a panic: every input maps to one
/// of these or to a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is shorter than the two-byte envelope header.
    #[error("frame of {len} bytes is too short for the 2-byte envelope (version, kind)")]
    TooShort {
        /// Length of the frame that was received.
        len: usize,
    },
    /// The version byte names a version this build does not speak.
    #[error(
        "wire version {found} is not supported (this build speaks version {VERSION}); upgrade the older side"
    )]
    UnsupportedVersion {
        /// The version byte that was received.
        found: u8,
    },
    /// The kind byte is not a message of the channel the frame arrived on.
    #[error("kind 0x{kind:02x} is not a {channel} message")]
    UnknownKind {
        /// Name of the channel (the enum) that was decoding.
        channel: &'static str,
        /// The kind byte that was received.
        kind: u8,
    },
    /// The postcard body does not decode as the kind's type.
    #[error("{kind} body is malformed: {reason}")]
    Body {
        /// Name of the message type.
        kind: &'static str,
        /// What postcard reported.
        reason: String,
    },
    /// The body decoded but bytes were left over.
    #[error("{kind} body has {extra} trailing bytes")]
    TrailingBytes {
        /// Name of the message type.
        kind: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
}

/// Serialization failed. With the types of this crate this does not happen in
/// practice, but it is reported rather than assumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not encode {kind}: {reason}")]
pub struct EncodeError {
    /// Name of the message type.
    pub kind: &'static str,
    /// What postcard reported.
    pub reason: String,
}

/// Splits a frame into its kind byte and body after checking the version.
pub fn open(frame: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    match frame {
        [VERSION, kind, body @ ..] => Ok((*kind, body)),
        [found, _, ..] => Err(DecodeError::UnsupportedVersion { found: *found }),
        _ => Err(DecodeError::TooShort { len: frame.len() }),
    }
}

/// Writes the envelope header and `body` as postcard.
pub fn seal<T: Serialize>(kind: u8, name: &'static str, body: &T) -> Result<Vec<u8>, EncodeError> {
    let header = vec![VERSION, kind];
    postcard::to_extend(body, header).map_err(|e| EncodeError {
        kind: name,
        reason: e.to_string(),
    })
}

/// Appends `value` as the wire writes every unsigned integer (postcard's
/// varint: 7 bits a byte, low first), for tools that splice a sequence
/// number into a prepared batch frame.
pub fn push_varint(out: &mut Vec<u8>, value: u64) {
    // A u64 takes at most ten varint bytes, so this cannot run out of room.
    let mut buf = [0u8; 10];
    if let Ok(used) = postcard::to_slice(&value, &mut buf) {
        out.extend_from_slice(used);
    }
}

/// Decodes a whole body as `T`, refusing leftovers.
pub fn body<T: DeserializeOwned>(name: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Body {
        kind: name,
        reason: e.to_string(),
    })?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes {
            kind: name,
            extra: rest.len(),
        })
    }
}

/// Declares a channel: an enum with one variant per message kind, its kind
/// bytes, and `encode`/`decode` through the envelope.
macro_rules! channel {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $kind:literal => $variant:ident($ty:ty), )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )+
        }

        impl $name {
            /// The kind byte of this message.
            pub fn kind(&self) -> u8 {
                match self { $( Self::$variant(_) => $kind, )+ }
            }

            /// The name of this message's type, for logs and errors.
            pub fn name(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant), )+ }
            }

            /// Encodes this message as one frame: `[version][kind][postcard body]`.
            pub fn encode(&self) -> Result<Vec<u8>, $crate::envelope::EncodeError> {
                match self {
                    $( Self::$variant(m) => $crate::envelope::seal($kind, stringify!($variant), m), )+
                }
            }

            /// Decodes one frame of this channel.
            pub fn decode(frame: &[u8]) -> Result<Self, $crate::envelope::DecodeError> {
                let (kind, bytes) = $crate::envelope::open(frame)?;
                match kind {
                    $( $kind => $crate::envelope::body(stringify!($variant), bytes).map(Self::$variant), )+
                    kind => Err($crate::envelope::DecodeError::UnknownKind { channel: stringify!($name), kind }),
                }
            }
        }

        $(
            impl From<$ty> for $name {
                fn from(m: $ty) -> Self { Self::$variant(m) }
            }
        )+
    };
}
pub(crate) use channel;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_checks_version_before_anything_else() {
        assert_eq!(open(&[]), Err(DecodeError::TooShort { len: 0 }));
        assert_eq!(open(&[1]), Err(DecodeError::TooShort { len: 1 }));
        assert_eq!(
            open(&[1, 0x11, 0]),
            Err(DecodeError::UnsupportedVersion { found: 1 })
        );
        assert_eq!(open(&[2, 0x11, 9, 9]), Ok((0x11, &[9u8, 9][..])));
    }

    #[test]
    fn varints_are_seven_bits_a_byte_low_first() {
        for (value, want) in [
            (0u64, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (u64::MAX, [vec![0xff; 9], vec![0x01]].concat()),
        ] {
            let mut out = vec![9];
            push_varint(&mut out, value);
            assert_eq!(out[1..], want[..], "{value}");
            assert_eq!(body::<u64>("X", &out[1..]), Ok(value));
        }
    }

    #[test]
    fn body_refuses_trailing_bytes() {
        assert_eq!(body::<u8>("X", &[5]), Ok(5));
        assert_eq!(
            body::<u8>("X", &[5, 6]),
            Err(DecodeError::TrailingBytes {
                kind: "X",
                extra: 1
            })
        );
        assert!(matches!(
            body::<u64>("X", &[0xff]),
            Err(DecodeError::Body { .. })
        ));
    }
}
