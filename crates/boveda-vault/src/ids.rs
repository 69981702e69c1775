//! Newtypes for every kind of id, so that a pack id is never passed where a
//! chunk id is expected.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        // Hex in JSON (what people read), raw bytes in binary encodings.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() { s.serialize_str(&self.to_hex()) } else { self.0.serialize(s) }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid {} {s:?}", stringify!($name))))
                } else {
                    <[u8; $len]>::deserialize(d).map(Self)
                }
            }
        }

        impl $name {
            pub const LEN: usize = $len;

            /// Full lower-case hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses the full hex form.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }

            /// The first 8 hex digits, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

hex_id!(
    /// A chunk's id: the keyed BLAKE3 hash of its plaintext.
    ChunkId, 32
);
hex_id!(
    /// A pack's id: the BLAKE3 hash of the pack file's bytes.
    PackId, 32
);
hex_id!(
    /// A recovery point's id (random).
    PointId, 16
);
hex_id!(
    /// The id of a catalog entity: an item, a policy, a key slot (random).
    RecordId, 16
);

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // getrandom only fails where the OS has no randomness source at all;
    // continuing with zeros would be unsafe, so this is the one place that stops.
    if let Err(e) = getrandom::fill(&mut out) {
        panic!("the operating system's random number source failed: {e}");
    }
    out
}

impl PointId {
    pub fn random() -> Self {
        Self(random_bytes())
    }
}

impl RecordId {
    pub fn random() -> Self {
        Self(random_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_in_json_and_bytes_in_postcard() {
        let id = PointId([0xab; 16]);
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<PointId>(&json).expect("back"), id);
        let bin = postcard::to_stdvec(&id).expect("postcard");
        assert_eq!(bin.len(), 16);
        assert_eq!(postcard::from_bytes::<PointId>(&bin).expect("back"), id);
        assert!(serde_json::from_str::<PointId>("\"zz\"").is_err());
    }
}
