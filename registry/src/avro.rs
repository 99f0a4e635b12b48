//! Avro schemas through the apache-avro crate: parsing (with the schemas a
//! schema references), the normalized text, and compatibility.
//!
//! Every call into the crate runs under `catch_unwind`: a schema a client
//! sends must not take the registry's thread down, and the crate has
//! panicking paths (`Schema::canonical_form` on a schema it cannot
//! serialize).

use std::panic::{catch_unwind, AssertUnwindSafe};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

use crate::compat::Direction;
use crate::schema::InvalidSchema;

/// A parsed Avro schema. Named types it references stay `Schema::Ref`s by
/// name, so two versions that reference the same type compare by name.
pub struct AvroSchema {
    schema: Schema,
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| format!("{what} failed on this schema"))
}

/// Parses `text`, resolving names against `references` (the texts of the
/// referenced schemas, dependencies first).
pub fn parse(text: &str, references: &[String]) -> Result<AvroSchema, InvalidSchema> {
    let parsed = guarded("parsing", || {
        if references.is_empty() {
            Schema::parse_str(text)
        } else {
            Schema::parse_str_with_list(text, references).map(|(s, _)| s)
        }
    })
    .map_err(InvalidSchema)?;
    let schema = parsed.map_err(|e| InvalidSchema(format!("Invalid schema: {e}")))?;
    // The canonical form is what clients fingerprint; a schema without one
    // is refused here rather than failing later.
    guarded("the canonical form", || schema.canonical_form()).map_err(InvalidSchema)?;
    Ok(AvroSchema { schema })
}

impl AvroSchema {
    /// The full JSON form apache-avro writes: whitespace gone, attributes
    /// in a fixed order, defaults, docs and logical types kept (unlike the
    /// Parsing Canonical Form, which would drop the defaults readers need).
    pub fn normalized(&self) -> String {
        serde_json::to_string(&self.schema).unwrap_or_default()
    }
}

/// The reasons `new` and `old` are incompatible in `direction`.
pub fn check(new: &AvroSchema, old: &AvroSchema, direction: Direction) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut can_read = |writer: &Schema, reader: &Schema, what: &str| match guarded(
        "the compatibility check",
        || SchemaCompatibility::can_read(writer, reader),
    ) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("{what}: {e}")),
        Err(e) => reasons.push(e),
    };
    if matches!(direction, Direction::Backward | Direction::Both) {
        can_read(
            &old.schema,
            &new.schema,
            "the new schema cannot read data written with an earlier one",
        );
    }
    if matches!(direction, Direction::Forward | Direction::Both) {
        can_read(
            &new.schema,
            &old.schema,
            "an earlier schema cannot read data written with the new one",
        );
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_schemas_are_refused_with_a_reason() {
        for bad in [
            "",
            "{",
            r#"{"type":"record","name":"R"}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"nope"}]}"#,
            r#"{"type":"enum","name":"E","symbols":["A","A"]}"#,
        ] {
            let e = parse(bad, &[])
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(!e.0.is_empty());
        }
        assert!(parse(r#""string""#, &[]).is_ok());
    }

    #[test]
    fn references_resolve_named_types() {
        let inner =
            r#"{"type":"record","name":"com.acme.Inner","fields":[{"name":"x","type":"int"}]}"#;
        let outer =
            r#"{"type":"record","name":"Outer","fields":[{"name":"i","type":"com.acme.Inner"}]}"#;
        assert!(
            parse(outer, &[]).is_err(),
            "an unknown name without its reference"
        );
        assert!(parse(outer, &[inner.to_string()]).is_ok());
    }

    #[test]
    fn normalized_keeps_defaults_and_drops_whitespace() {
        let s = parse(
            r#"{ "type": "record", "name": "R",
                 "fields": [ {"name": "a", "type": "int", "default": 7} ] }"#,
            &[],
        )
        .unwrap();
        let n = s.normalized();
        assert!(n.contains(r#""default":7"#), "{n}");
        assert!(!n.contains(' '), "{n}");
        assert!(parse(&n, &[]).is_ok());
    }
}
