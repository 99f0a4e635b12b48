//! Schema types, references, and what the registry needs of a schema of
//! any type: validation (with its references), the text it stores, the
//! identity that makes "the same schema" the same id, and compatibility.
//! Avro is `crate::avro`; Protobuf and JSON Schema are not supported yet.

use serde::{Deserialize, Serialize};

use crate::avro;
use crate::compat::Direction;

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
    pub const SUPPORTED: &'static [&'static str] = &["AVRO"];
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

/// The text of each schema a schema references, dependencies first, as
/// the parser needs them.
pub type ResolvedReferences = Vec<String>;

/// Why a schema is refused (error 42201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchema(pub String);

/// A schema that parsed, ready for compatibility checks.
pub enum Parsed {
    Avro(avro::AvroSchema),
}

impl Parsed {
    /// Parses `schema` of `schema_type` with the texts of its references.
    pub fn parse(
        schema_type: SchemaType,
        schema: &str,
        references: &[String],
    ) -> Result<Parsed, InvalidSchema> {
        match schema_type {
            SchemaType::Avro => avro::parse(schema, references).map(Parsed::Avro),
            SchemaType::Protobuf | SchemaType::Json => Err(InvalidSchema(format!(
                "schema type {schema_type:?} is not supported yet (supported: {:?})",
                SchemaType::SUPPORTED
            ))),
        }
    }

    /// The text stored for this schema when the client asks to normalize.
    pub fn normalized(&self) -> String {
        match self {
            Parsed::Avro(s) => s.normalized(),
        }
    }

    /// Whether data written with `writer` can be read with `self`; the
    /// reasons if not.
    pub fn check(&self, other: &Parsed, direction: Direction) -> Vec<String> {
        match (self, other) {
            (Parsed::Avro(new), Parsed::Avro(old)) => avro::check(new, old, direction),
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
