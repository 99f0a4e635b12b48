//! JSON Schema: parsing with serde_json and a structural check of the
//! keywords the registry reasons about, the canonical form, `$ref`
//! resolution (inside the document and into references by name).
//!
//! Compatibility is `crate::json_diff`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::schema::{InvalidSchema, NamedReference};

/// How deep `$ref`s and subschemas may nest before a schema is refused
/// (and before a comparison stops descending).
pub(crate) const MAX_DEPTH: usize = 64;

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// A parsed JSON Schema with the documents its references name.
pub struct JsonSchema {
    pub(crate) root: Value,
    references: HashMap<String, Value>,
}

/// Parses `text`, with its references' texts by name.
pub fn parse(text: &str, references: &[NamedReference]) -> Result<JsonSchema, InvalidSchema> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| InvalidSchema(format!("Invalid schema: not JSON: {e}")))?;
    let mut docs = HashMap::new();
    for r in references {
        let v: Value = serde_json::from_str(&r.schema).map_err(|e| {
            InvalidSchema(format!(
                "Invalid schema: reference {} is not JSON: {e}",
                r.name
            ))
        })?;
        docs.insert(r.name.clone(), v);
    }
    let schema = JsonSchema {
        root,
        references: docs,
    };
    check_schema(&schema, &schema.root, "#", 0)?;
    Ok(schema)
}

fn invalid(at: &str, what: &str) -> InvalidSchema {
    InvalidSchema(format!("Invalid schema: {at}: {what}"))
}

/// Checks that `v` is a schema whose keywords have the right shapes, and
/// that every `$ref` resolves.
fn check_schema(doc: &JsonSchema, v: &Value, at: &str, depth: usize) -> Result<(), InvalidSchema> {
    if depth > MAX_DEPTH {
        return Err(invalid(at, "nests too deeply"));
    }
    let obj = match v {
        Value::Bool(_) => return Ok(()),
        Value::Object(o) => o,
        _ => return Err(invalid(at, "a schema must be an object or a boolean")),
    };
    let deeper = depth.saturating_add(1);
    let sub = |key: &str, s: &Value| check_schema(doc, s, &format!("{at}/{key}"), deeper);
    match obj.get("type") {
        None => {}
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(ts))
            if !ts.is_empty()
                && ts
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))) => {}
        Some(_) => return Err(invalid(at, "`type` must name JSON types")),
    }
    for key in [
        "properties",
        "patternProperties",
        "definitions",
        "$defs",
        "dependentSchemas",
    ] {
        match obj.get(key) {
            None => {}
            Some(Value::Object(m)) => {
                for (name, s) in m {
                    sub(&format!("{key}/{name}"), s)?;
                }
            }
            Some(_) => return Err(invalid(at, &format!("`{key}` must be an object"))),
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        match obj.get(key) {
            None => {}
            Some(Value::Array(a)) if !a.is_empty() => {
                for (i, s) in a.iter().enumerate() {
                    sub(&format!("{key}/{i}"), s)?;
                }
            }
            Some(_) => return Err(invalid(at, &format!("`{key}` must be a non-empty array"))),
        }
    }
    for key in [
        "not",
        "additionalProperties",
        "additionalItems",
        "contains",
        "if",
        "then",
        "else",
    ] {
        if let Some(s) = obj.get(key) {
            sub(key, s)?;
        }
    }
    match obj.get("items") {
        None => {}
        Some(Value::Array(a)) => {
            for (i, s) in a.iter().enumerate() {
                sub(&format!("items/{i}"), s)?;
            }
        }
        Some(s) => sub("items", s)?,
    }
    match obj.get("required") {
        None => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return Err(invalid(at, "`required` must be an array of strings")),
    }
    match obj.get("enum") {
        None | Some(Value::Array(_)) => {}
        Some(_) => return Err(invalid(at, "`enum` must be an array")),
    }
    for key in [
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "maxProperties",
        "minProperties",
    ] {
        if obj.get(key).is_some_and(|n| n.as_u64().is_none()) {
            return Err(invalid(
                at,
                &format!("`{key}` must be a non-negative integer"),
            ));
        }
    }
    for key in ["maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"] {
        if obj
            .get(key)
            .is_some_and(|n| !n.is_number() && !n.is_boolean())
        {
            return Err(invalid(at, &format!("`{key}` must be a number")));
        }
    }
    if obj
        .get("multipleOf")
        .is_some_and(|n| !n.as_f64().is_some_and(|f| f > 0.0))
    {
        return Err(invalid(at, "`multipleOf` must be a number above 0"));
    }
    if obj.get("pattern").is_some_and(|p| !p.is_string()) {
        return Err(invalid(at, "`pattern` must be a string"));
    }
    match obj.get("$ref") {
        None => Ok(()),
        Some(Value::String(r)) => doc
            .resolve(r)
            .map(|_| ())
            .ok_or_else(|| invalid(at, &format!("`$ref` {r} does not resolve"))),
        Some(_) => Err(invalid(at, "`$ref` must be a string")),
    }
}

impl JsonSchema {
    /// The schema a `$ref` names: `#/pointer` in this document, or
    /// `name[#/pointer]` in a reference.
    pub(crate) fn resolve(&self, r: &str) -> Option<&Value> {
        let (doc, pointer) = match r.split_once('#') {
            Some(("", p)) => (&self.root, p),
            Some((name, p)) => (self.references.get(name)?, p),
            None => (self.references.get(r)?, ""),
        };
        if pointer.is_empty() {
            Some(doc)
        } else {
            doc.pointer(pointer)
        }
    }

    /// The schema with its object keys sorted and whitespace gone.
    pub fn canonical(&self) -> String {
        sorted(&self.root).to_string()
    }
}

pub(crate) fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(x) = m.get(k) {
                    out.insert(k.clone(), sorted(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}
