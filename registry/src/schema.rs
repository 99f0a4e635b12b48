//! Schema types, references, and what the registry needs of a schema of
//! any type: validation (with its references), the text it stores, the
//! identity that makes "the same schema" the same id, and compatibility.
//! Avro is `crate::avro`, Protobuf `crate::protobuf`, JSON Schema
//! `crate::json_schema`.

use serde::{Deserialize, Serialize};

use crate::avro;
use crate::compat::Direction;
use crate::protobuf;
use crate::{json_diff, json_schema};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchemaType {
    #[default]
    #[serde(rename = "AVRO")]
    Avro,
    #[serde(rename = "PROTOBUF")]
    Protobuf,
    #[serde(rename = "JSON")]
    Json,
}

impl SchemaType {
    pub fn is_avro(&self) -> bool {
        *self == SchemaType::Avro
    }

    /// The types this registry accepts, as `GET /schemas/types` lists them.
    pub const SUPPORTED: &'static [&'static str] = &["AVRO", "PROTOBUF", "JSON"];
}

/// A reference from a schema to another subject's version, by the name
/// the referring schema uses for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema's text with its type and references: what an id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaBody {
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// A schema a schema references: the name it is referenced by (for
/// Protobuf, the import path) and its text. The parser gets them
/// dependencies first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedReference {
    pub name: String,
    pub schema: String,
}

/// Why a schema is refused (error 42201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchema(pub String);

/// A schema that parsed, ready for compatibility checks.
pub enum Parsed {
    Avro(avro::AvroSchema),
    Protobuf(protobuf::ProtoSchema),
    Json(json_schema::JsonSchema),
}

impl Parsed {
    /// Parses `schema` of `schema_type` with the texts of its references.
    pub fn parse(
        schema_type: SchemaType,
        schema: &str,
        references: &[NamedReference],
    ) -> Result<Parsed, InvalidSchema> {
        match schema_type {
            SchemaType::Avro => {
                let texts: Vec<String> = references.iter().map(|r| r.schema.clone()).collect();
                avro::parse(schema, &texts).map(Parsed::Avro)
            }
            SchemaType::Protobuf => protobuf::parse(schema, references).map(Parsed::Protobuf),
            SchemaType::Json => json_schema::parse(schema, references).map(Parsed::Json),
        }
    }

    /// The text stored for this schema when the client asks to normalize.
    pub fn normalized(&self) -> String {
        match self {
            Parsed::Avro(s) => s.normalized(),
            Parsed::Protobuf(s) => s.serialized(),
            Parsed::Json(s) => s.canonical(),
        }
    }

    /// Whether data written with `writer` can be read with `self`; the
    /// reasons if not.
    pub fn check(&self, other: &Parsed, direction: Direction) -> Vec<String> {
        match (self, other) {
            (Parsed::Avro(new), Parsed::Avro(old)) => avro::check(new, old, direction),
            (Parsed::Protobuf(new), Parsed::Protobuf(old)) => protobuf::check(new, old, direction),
            (Parsed::Json(new), Parsed::Json(old)) => json_diff::check(new, old, direction),
            // Confluent refuses a change of type under one subject.
            _ => vec!["the schema type differs from the earlier version's".to_string()],
        }
    }
}

/// What makes two registrations the same schema: the type, the text with
/// insignificant whitespace and JSON key order removed, and the references.
pub fn identity(body: &SchemaBody) -> String {
    let text = match body.schema_type {
        SchemaType::Avro | SchemaType::Json => {
            serde_json::from_str::<serde_json::Value>(&body.schema)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| body.schema.trim().to_string())
        }
        SchemaType::Protobuf => body.schema.trim().to_string(),
    };
    let refs: Vec<String> = body
        .references
        .iter()
        .map(|r| format!("{}={}:{}", r.name, r.subject, r.version))
        .collect();
    format!("{:?}|{}|{}", body.schema_type, refs.join(","), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> SchemaBody {
        SchemaBody {
            schema_type: SchemaType::Avro,
            schema: s.to_string(),
            references: vec![],
        }
    }

    #[test]
    fn identity_ignores_whitespace_and_key_order_only() {
        let a = body(r#"{"type":"record","name":"A","fields":[]}"#);
        let b = body(r#"{ "name": "A", "fields": [], "type": "record" }"#);
        let c = body(r#"{"type":"record","name":"B","fields":[]}"#);
        assert_eq!(identity(&a), identity(&b));
        assert_ne!(identity(&a), identity(&c));
        let mut d = a.clone();
        d.references.push(Reference {
            name: "x".into(),
            subject: "y".into(),
            version: 1,
        });
        assert_ne!(identity(&a), identity(&d));
    }
}
