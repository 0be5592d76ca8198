//! How the activity ids in a lead's state serialise: as text in human-readable formats, and in
//! binary ones as the 16 bytes of the UUID when the id is a UUID in its usual form (lowercase,
//! hyphenated: every id ingestion makes), 17 bytes instead of 37. Any other id stays text, so
//! an id always reads back exactly as it was written.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// An id as a binary format holds it.
#[derive(Serialize)]
enum Compact<'a> {
    Uuid(uuid::Bytes),
    Text(&'a str),
}

/// [`Compact`], read back.
#[derive(Deserialize)]
enum CompactOwned {
    Uuid(uuid::Bytes),
    Text(String),
}

/// One id, serialised by the format's kind.
struct Id<'a>(&'a str);

impl Serialize for Id<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        match canonical_uuid(self.0) {
            Some(uuid) => Compact::Uuid(*uuid.as_bytes()),
            None => Compact::Text(self.0),
        }
        .serialize(serializer)
    }
}

/// [`Id`], read back.
struct OwnedId(String);

impl<'de> Deserialize<'de> for OwnedId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return String::deserialize(deserializer).map(OwnedId);
        }
        Ok(OwnedId(match CompactOwned::deserialize(deserializer)? {
            CompactOwned::Uuid(bytes) => Uuid::from_bytes(bytes).to_string(),
            CompactOwned::Text(text) => text,
        }))
    }
}

/// The UUID `id` spells, when it spells one exactly as [`Uuid`]'s `Display` writes it.
fn canonical_uuid(id: &str) -> Option<Uuid> {
    let uuid = Uuid::try_parse(id).ok()?;
    let mut spelled = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    (uuid.hyphenated().encode_lower(&mut spelled).as_bytes() == id.as_bytes()).then_some(uuid)
}

/// An `Option<String>` id field.
pub mod optional {
    use super::{Deserialize, Deserializer, Id, OwnedId, Serialize, Serializer};

    /// Serialises `id`.
    pub fn serialize<S: Serializer>(id: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
        id.as_deref().map(Id).serialize(serializer)
    }

    /// Deserialises an id or none.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Ok(Option::<OwnedId>::deserialize(deserializer)?.map(|id| id.0))
    }
}

/// A `HashSet<String>` field of ids.
pub mod set {
    use super::{Deserialize, Deserializer, HashSet, Id, OwnedId, Serializer};

    /// Serialises `ids`.
    pub fn serialize<S: Serializer>(
        ids: &HashSet<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(ids.iter().map(|id| Id(id)))
    }

    /// Deserialises a set of ids.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HashSet<String>, D::Error> {
        let ids = Vec::<OwnedId>::deserialize(deserializer)?;
        Ok(ids.into_iter().map(|id| id.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ids {
        #[serde(with = "optional")]
        one: Option<String>,
        #[serde(with = "set")]
        many: HashSet<String>,
    }

    fn ids(one: Option<&str>, many: &[&str]) -> Ids {
        Ids {
            one: one.map(str::to_owned),
            many: many.iter().map(|id| (*id).to_owned()).collect(),
        }
    }

    #[test]
    fn a_uuid_takes_seventeen_bytes_in_binary_and_stays_text_in_json() {
        let uuid = "0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c3d5e";
        let both = ids(Some(uuid), &[uuid]);
        let binary = postcard::to_allocvec(&both).expect("encodes");
        assert_eq!(binary.len(), 1 + 17 + 1 + 17, "{binary:?}");
        assert_eq!(postcard::from_bytes::<Ids>(&binary).expect("decodes"), both);
        let json = serde_json::to_string(&both).expect("json");
        assert_eq!(json, format!(r#"{{"one":"{uuid}","many":["{uuid}"]}}"#));
        assert_eq!(serde_json::from_str::<Ids>(&json).expect("reads"), both);
    }

    #[test]
    fn ids_that_are_not_uuids_as_written_stay_text() {
        for id in [
            "crm-import-17",
            "0190F3A2-7C1E-7B3A-9D4E-2F6A8B1C3D5E",
            "0190f3a27c1e7b3a9d4e2f6a8b1c3d5e",
            "{0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c3d5e}",
            "urn:uuid:0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c3d5e",
            "",
        ] {
            let one = ids(Some(id), &[id]);
            let binary = postcard::to_allocvec(&one).expect("encodes");
            assert_eq!(postcard::from_bytes::<Ids>(&binary).expect("decodes"), one);
        }
        let none = ids(None, &[]);
        let binary = postcard::to_allocvec(&none).expect("encodes");
        assert_eq!(postcard::from_bytes::<Ids>(&binary).expect("decodes"), none);
    }

    proptest! {
        #[test]
        fn every_id_reads_back_exactly(
            text in ".{0,40}",
            uuid in any::<u128>(),
            upper in any::<bool>(),
        ) {
            let uuid = Uuid::from_u128(uuid).to_string();
            let uuid = if upper { uuid.to_uppercase() } else { uuid };
            let written = ids(Some(&text), &[&text, &uuid]);
            let binary = postcard::to_allocvec(&written).expect("encodes");
            prop_assert_eq!(postcard::from_bytes::<Ids>(&binary).expect("decodes"), written);
        }
    }
}
