//! Serde forms of ids for binary formats: 32 raw bytes each (hex strings,
//! the ids' own serde form, when the format is human-readable, e.g. JSON).

/// One [`ObjectId`](crate::ObjectId) or `[u8; 32]` hash.
pub(crate) mod id_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use store::ObjectId;

    pub fn serialize<S: Serializer>(id: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            ObjectId(*id).serialize(s)
        } else {
            id.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            Ok(ObjectId::deserialize(d)?.0)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

/// A `Vec<ObjectId>`.
pub(crate) mod ids_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use store::ObjectId;

    pub fn serialize<S: Serializer>(ids: &[ObjectId], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            ids.serialize(s)
        } else {
            s.collect_seq(ids.iter().map(|id| id.0))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ObjectId>, D::Error> {
        if d.is_human_readable() {
            Vec::<ObjectId>::deserialize(d)
        } else {
            Ok(Vec::<[u8; 32]>::deserialize(d)?
                .into_iter()
                .map(ObjectId)
                .collect())
        }
    }
}
