//! A token id as the decision cache keeps it: 16 bytes for the usual
//! UUID, the string otherwise.
//!
//! Every cached decision names its token (the subject of the audit trail),
//! and a million of them are kept: a UUID in its canonical text form takes
//! a 36-byte string on the heap (64 bytes with its header and the
//! allocator's rounding), its 16 bytes take none. Only the canonical
//! lower-case hyphenated form is packed, so that packing and rendering give
//! back exactly the string the token service sent; any other id is kept as
//! it came.

use std::sync::Arc;

use uuid::Uuid;

/// A token id (safe to log).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SubjectId {
    /// A UUID whose canonical text is the id.
    Uuid([u8; 16]),
    /// Any other id.
    Other(Arc<str>),
}

impl SubjectId {
    /// The id `id`, packed when it is a canonical UUID.
    pub(crate) fn of(id: &str) -> Self {
        Self::packed(id).unwrap_or_else(|| Self::Other(Arc::from(id)))
    }

    /// The id `id`, packed when it is a canonical UUID, else sharing `id`.
    pub(crate) fn from_shared(id: &Arc<str>) -> Self {
        Self::packed(id).unwrap_or_else(|| Self::Other(Arc::clone(id)))
    }

    fn packed(id: &str) -> Option<Self> {
        if id.len() != uuid::fmt::Hyphenated::LENGTH {
            return None;
        }
        let uuid = Uuid::try_parse(id).ok()?;
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        (uuid.hyphenated().encode_lower(&mut text).as_bytes() == id.as_bytes())
            .then(|| Self::Uuid(uuid.into_bytes()))
    }

    /// The id as the rest of the proxy passes it around.
    pub(crate) fn to_shared(&self) -> Arc<str> {
        match self {
            Self::Uuid(bytes) => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                Arc::from(
                    &*Uuid::from_bytes(*bytes)
                        .hyphenated()
                        .encode_lower(&mut text),
                )
            }
            Self::Other(id) => Arc::clone(id),
        }
    }
}

impl std::fmt::Display for SubjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uuid(bytes) => write!(f, "{}", Uuid::from_bytes(*bytes).hyphenated()),
            Self::Other(id) => f.write_str(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_are_packed_and_render_back_exactly() {
        let id = "0b7c3f9e-2d4a-4c1b-9f8e-7a6b5c4d3e2f";
        let s = SubjectId::of(id);
        assert!(matches!(s, SubjectId::Uuid(_)));
        assert_eq!(&*s.to_shared(), id);
        assert_eq!(s.to_string(), id);
        assert_eq!(SubjectId::from_shared(&Arc::from(id)), s);
    }

    #[test]
    fn other_forms_are_kept_as_they_came() {
        for id in [
            "0B7C3F9E-2D4A-4C1B-9F8E-7A6B5C4D3E2F",
            "0b7c3f9e2d4a4c1b9f8e7a6b5c4d3e2f",
            "{0b7c3f9e-2d4a-4c1b-9f8e-7a6b5c4d3e2}",
            "token-7",
            "",
        ] {
            let s = SubjectId::of(id);
            assert!(matches!(s, SubjectId::Other(_)), "{id}");
            assert_eq!(&*s.to_shared(), id);
        }
        // Two spellings of one UUID are two ids, as the token service sees them.
        assert_ne!(
            SubjectId::of("0b7c3f9e-2d4a-4c1b-9f8e-7a6b5c4d3e2f"),
            SubjectId::of("0B7C3F9E-2D4A-4C1B-9F8E-7A6B5C4D3E2F")
        );
    }

    #[test]
    fn it_is_compact() {
        assert!(std::mem::size_of::<Option<SubjectId>>() <= 24);
    }
}
