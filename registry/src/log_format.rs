//! The records of the `_schemas` topic, in Confluent's key and value JSON.
//!
//! Keys (compaction keeps the last value per key, so a key's bytes must be
//! the same each time: serde writes the fields in declaration order):
//! - `{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}` → a schema
//!   version: `{"subject","version","id","schemaType"?,"references"?,
//!   "schema","deleted"}`; a null value (tombstone) deletes it permanently.
//! - `{"keytype":"CONFIG","subject":S|null,"magic":0}` →
//!   `{"compatibilityLevel":L}`; null clears the subject's (or the global) level.
//! - `{"keytype":"MODE","subject":S|null,"magic":0}` → `{"mode":M}`.
//! - `{"keytype":"DELETE_SUBJECT","subject":S,"magic":0}` →
//!   `{"subject":S,"version":V}`: every version up to V is soft-deleted.
//! - `{"keytype":"NOOP","magic":0}`: Confluent writes it with a null value
//!   to find the end of the log. Strom writes `{"maxId":N}` under it before
//!   a permanent delete, so the highest id ever given out survives the
//!   compaction of the deleted schema's records and is never reused.
//!
//! Other key types (CONTEXT, CLEAR_SUBJECT, ...) are skipped with a warning.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::schema::{Reference, SchemaType};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype")]
pub enum Key {
    #[serde(rename = "SCHEMA")]
    Schema {
        subject: String,
        version: i32,
        magic: i32,
    },
    #[serde(rename = "CONFIG")]
    Config { subject: Option<String>, magic: i32 },
    #[serde(rename = "MODE")]
    Mode { subject: Option<String>, magic: i32 },
    #[serde(rename = "DELETE_SUBJECT")]
    DeleteSubject { subject: String, magic: i32 },
    #[serde(rename = "NOOP")]
    Noop { magic: i32 },
}

impl Key {
    pub fn schema(subject: &str, version: i32) -> Key {
        Key::Schema {
            subject: subject.to_string(),
            version,
            magic: 1,
        }
    }

    pub fn config(subject: Option<&str>) -> Key {
        Key::Config {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }

    pub fn mode(subject: Option<&str>) -> Key {
        Key::Mode {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }

    pub fn delete_subject(subject: &str) -> Key {
        Key::DeleteSubject {
            subject: subject.to_string(),
            magic: 0,
        }
    }

    pub fn noop() -> Key {
        Key::Noop { magic: 0 }
    }
}

/// A SCHEMA record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(default, skip_serializing_if = "SchemaType::is_avro")]
    pub schema_type: SchemaType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    pub compatibility_level: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoopValue {
    pub max_id: i32,
}

/// One record to append: a key and its value, or a tombstone.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

impl Entry {
    pub fn new(key: &Key, value: Option<&impl Serialize>) -> Result<Entry, serde_json::Error> {
        Ok(Entry {
            key: Bytes::from(serde_json::to_vec(key)?),
            value: value.map(serde_json::to_vec).transpose()?.map(Bytes::from),
        })
    }

    pub fn tombstone(key: &Key) -> Result<Entry, serde_json::Error> {
        Entry::new(key, None::<&SchemaValue>)
    }
}

/// A record read back, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Schema {
        subject: String,
        version: i32,
        value: Option<SchemaValue>,
    },
    Config {
        subject: Option<String>,
        value: Option<ConfigValue>,
    },
    Mode {
        subject: Option<String>,
        value: Option<ModeValue>,
    },
    DeleteSubject(DeleteSubjectValue),
    Noop(Option<NoopValue>),
}

/// Decodes one record; `Err` says why it is skipped.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Decoded, String> {
    let key: Key = serde_json::from_slice(key).map_err(|e| format!("key: {e}"))?;
    fn parse<T: for<'de> Deserialize<'de>>(v: Option<&[u8]>) -> Result<Option<T>, String> {
        v.map(serde_json::from_slice)
            .transpose()
            .map_err(|e| format!("value: {e}"))
    }
    Ok(match key {
        Key::Schema {
            subject, version, ..
        } => Decoded::Schema {
            subject,
            version,
            value: parse(value)?,
        },
        Key::Config { subject, .. } => Decoded::Config {
            subject,
            value: parse(value)?,
        },
        Key::Mode { subject, .. } => Decoded::Mode {
            subject,
            value: parse(value)?,
        },
        Key::DeleteSubject { .. } => Decoded::DeleteSubject(
            parse(value)?.ok_or_else(|| "DELETE_SUBJECT without a value".to_string())?,
        ),
        // Confluent's NOOP has a null value; Strom's carries the highest id.
        Key::Noop { .. } => Decoded::Noop(parse(value).unwrap_or(None)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_confluents_bytes() {
        let k = serde_json::to_string(&Key::schema("t-value", 3)).unwrap();
        assert_eq!(
            k,
            r#"{"keytype":"SCHEMA","subject":"t-value","version":3,"magic":1}"#
        );
        let k = serde_json::to_string(&Key::config(None)).unwrap();
        assert_eq!(k, r#"{"keytype":"CONFIG","subject":null,"magic":0}"#);
        let k = serde_json::to_string(&Key::noop()).unwrap();
        assert_eq!(k, r#"{"keytype":"NOOP","magic":0}"#);
    }

    #[test]
    fn reads_a_confluent_schema_record() {
        let key = br#"{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}"#;
        let value = br#"{"subject":"s","version":1,"id":21,"schema":"\"string\"","deleted":false}"#;
        let d = decode(key, Some(value)).unwrap();
        let Decoded::Schema { value: Some(v), .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(v.id, 21);
        assert_eq!(v.schema_type, SchemaType::Avro);
        assert!(decode(br#"{"keytype":"CONTEXT","magic":0}"#, None).is_err());
        assert!(decode(b"not json", None).is_err());
    }
}
