//! Values stored by this crate: one version byte, then postcard.
//!
//! postcard's wire format is stable since 1.0 and compact (varints, no field names);
//! the leading version byte lets a later release change the layout and still read
//! what an older one wrote.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The only layout written today.
pub(crate) const VERSION: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, vec![VERSION])
}

#[derive(Debug)]
pub(crate) enum DecodeError {
    Empty,
    Version(u8),
    Postcard(postcard::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty value"),
            DecodeError::Version(v) => {
                write!(f, "unknown encoding version {v}, expected {VERSION}")
            }
            DecodeError::Postcard(e) => write!(f, "postcard: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    postcard::from_bytes(rest).map_err(DecodeError::Postcard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_other_versions() {
        let bytes = encode(&(7u64, "x".to_string())).unwrap();
        assert_eq!(bytes[0], VERSION);
        let back: (u64, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(matches!(
            decode::<(u64, String)>(&other),
            Err(DecodeError::Version(2))
        ));
        assert!(matches!(
            decode::<(u64, String)>(&[]),
            Err(DecodeError::Empty)
        ));
    }
}
