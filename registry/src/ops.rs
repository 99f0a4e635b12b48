//! The registry's operations over the store, one function per kind of
//! request, with Confluent's rules: which id and version a registration
//! gets, what a soft or a permanent delete needs first, what a
//! compatibility check compares. Reads use the state as the last write
//! left it; every write reads the log to the end first.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::compat::{self, Level};
use crate::error::ApiError;
use crate::log_format::{
    ConfigValue, DeleteSubjectValue, Entry, Key, ModeValue, NoopValue, SchemaValue,
};
use crate::schema::{identity, NamedReference, Parsed, Reference, SchemaBody, SchemaType};
use crate::state::{body_of, State, MODES};
use crate::store::Store;

/// How deep references may nest (a reference's references, ...).
const MAX_REFERENCE_DEPTH: usize = 32;

/// The body of a register, look-up or compatibility request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    pub schema: String,
    #[serde(default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// A version in a path: a number from 1, `latest` or -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

pub fn parse_version(v: &str) -> Result<VersionSpec, ApiError> {
    if v == "latest" || v == "-1" {
        return Ok(VersionSpec::Latest);
    }
    match v.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
        _ => Err(ApiError::invalid_version(v)),
    }
}

fn store_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::store(e)
}

fn schema_type(name: Option<&str>) -> Result<SchemaType, ApiError> {
    match name.map(str::to_ascii_uppercase).as_deref() {
        None | Some("AVRO") => Ok(SchemaType::Avro),
        Some("PROTOBUF") => Ok(SchemaType::Protobuf),
        Some("JSON") => Ok(SchemaType::Json),
        Some(other) => Err(ApiError::invalid_schema(&format!(
            "Unknown schema type {other}"
        ))),
    }
}

/// The schemas `refs` name, each after its own references.
fn resolve_references(state: &State, refs: &[Reference]) -> Result<Vec<NamedReference>, ApiError> {
    fn walk(
        state: &State,
        refs: &[Reference],
        depth: usize,
        out: &mut Vec<NamedReference>,
    ) -> Result<(), ApiError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(ApiError::invalid_schema("References nest too deeply"));
        }
        for r in refs {
            let v = state
                .subjects
                .get(&r.subject)
                .and_then(|vs| vs.get(&r.version))
                .ok_or_else(|| {
                    ApiError::invalid_schema(&format!(
                        "Invalid schema: reference {} to subject '{}' version {} not found",
                        r.name, r.subject, r.version
                    ))
                })?;
            walk(state, &v.references, depth.saturating_add(1), out)?;
            if !out.iter().any(|o| o.name == r.name && o.schema == v.schema) {
                out.push(NamedReference {
                    name: r.name.clone(),
                    schema: v.schema.clone(),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(state, refs, 0, &mut out)?;
    Ok(out)
}

fn parse_body(state: &State, body: &SchemaBody) -> Result<Parsed, ApiError> {
    let refs = resolve_references(state, &body.references)?;
    Parsed::parse(body.schema_type, &body.schema, &refs).map_err(|e| ApiError::invalid_schema(&e.0))
}

/// A schema's text in the `format` a read asks for: `serialized` turns a
/// Protobuf schema into a base64 `FileDescriptorProto` (confluent-kafka's
/// Python deserializer asks for that); otherwise the text as stored.
pub fn formatted(
    state: &State,
    body: &SchemaBody,
    format: Option<&str>,
) -> Result<String, ApiError> {
    if format == Some("serialized") && body.schema_type == SchemaType::Protobuf {
        if let Parsed::Protobuf(p) = parse_body(state, body)? {
            return Ok(p.serialized());
        }
    }
    Ok(body.schema.clone())
}

/// The request's schema, parsed, and normalized when asked.
fn request_body(
    state: &State,
    req: SchemaRequest,
    normalize: bool,
) -> Result<(SchemaBody, Parsed), ApiError> {
    let mut body = SchemaBody {
        schema_type: schema_type(req.schema_type.as_deref())?,
        schema: req.schema,
        references: req.references,
    };
    let parsed = parse_body(state, &body)?;
    if normalize {
        body.schema = parsed.normalized();
    }
    Ok((body, parsed))
}

/// The schemas of `versions`, parsed, oldest first. A stored version that
/// no longer parses (a reference deleted since) is left out of the check.
fn parse_versions(state: &State, versions: &[&SchemaValue]) -> Vec<Parsed> {
    versions
        .iter()
        .filter_map(|v| parse_body(state, &body_of(v)).ok())
        .collect()
}

fn ensure_writable(state: &State, subject: &str) -> Result<(), ApiError> {
    match state.mode(Some(subject)) {
        "READONLY" | "READONLY_OVERRIDE" => Err(ApiError::not_permitted(format!(
            "Subject {subject} is in read-only mode"
        ))),
        _ => Ok(()),
    }
}

fn entry(key: &Key, value: Option<&impl serde::Serialize>) -> Result<Entry, ApiError> {
    Entry::new(key, value).map_err(store_err)
}

/// `POST /subjects/{s}/versions`: the id of the schema under `subject`,
/// registering it as a new version when the subject does not have it.
pub async fn register(
    store: &mut Store,
    subject: &str,
    req: SchemaRequest,
    normalize: bool,
) -> Result<i32, ApiError> {
    store.catch_up(0).await.map_err(store_err)?;
    let state = &store.state;
    ensure_writable(state, subject)?;
    let (body, parsed) = request_body(state, req, normalize)?;
    let live = state.versions(subject, false);
    let wanted = identity(&body);
    if let Some(same) = live.iter().find(|v| identity(&body_of(v)) == wanted) {
        return Ok(same.id);
    }
    let reasons = compat::check(state.level(subject), &parsed, &parse_versions(state, &live));
    if !reasons.is_empty() {
        return Err(ApiError::incompatible(subject, &reasons));
    }
    let id = match state.id_of(&body) {
        Some(id) => id,
        None => state
            .max_id
            .checked_add(1)
            .ok_or_else(|| store_err("schema ids are exhausted"))?,
    };
    let version = state
        .subjects
        .get(subject)
        .and_then(|vs| vs.keys().next_back().copied())
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| store_err("versions are exhausted"))?;
    let value = SchemaValue {
        subject: subject.to_string(),
        version,
        id,
        schema_type: body.schema_type,
        references: body.references,
        schema: body.schema,
        deleted: false,
    };
    let e = entry(&Key::schema(subject, version), Some(&value))?;
    store.append(&[e]).await.map_err(store_err)?;
    Ok(id)
}

/// The JSON of a subject version, as Confluent answers it.
pub fn version_json(v: &SchemaValue) -> Value {
    let mut out = json!({
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schema": v.schema,
    });
    add_type_and_references(&mut out, v.schema_type, &v.references);
    out
}

/// Confluent leaves out `schemaType` for Avro and empty `references`.
pub fn add_type_and_references(out: &mut Value, t: SchemaType, refs: &[Reference]) {
    if let Some(map) = out.as_object_mut() {
        if !t.is_avro() {
            map.insert("schemaType".into(), json!(t));
        }
        if !refs.is_empty() {
            map.insert("references".into(), json!(refs));
        }
    }
}

/// `POST /subjects/{s}`: the version of `subject` that has this schema.
pub fn lookup(
    state: &State,
    subject: &str,
    req: SchemaRequest,
    normalize: bool,
    deleted: bool,
) -> Result<Value, ApiError> {
    if state.versions(subject, deleted).is_empty() {
        return Err(ApiError::subject_not_found(subject));
    }
    let (body, _) = request_body(state, req, normalize)?;
    let wanted = identity(&body);
    state
        .versions(subject, deleted)
        .into_iter()
        .rev()
        .find(|v| identity(&body_of(v)) == wanted)
        .map(version_json)
        .ok_or_else(ApiError::schema_not_found)
}

/// The version `spec` names in `subject`.
pub fn find_version<'a>(
    state: &'a State,
    subject: &str,
    spec: VersionSpec,
    deleted: bool,
) -> Result<&'a SchemaValue, ApiError> {
    let versions = state.versions(subject, deleted);
    if versions.is_empty() {
        return Err(ApiError::subject_not_found(subject));
    }
    let found = match spec {
        VersionSpec::Latest => versions.last().copied(),
        VersionSpec::Number(n) => versions.iter().find(|v| v.version == n).copied(),
    };
    found.ok_or_else(|| {
        let name = match spec {
            VersionSpec::Latest => "latest".to_string(),
            VersionSpec::Number(n) => n.to_string(),
        };
        ApiError::version_not_found(subject, &name)
    })
}

/// `POST /compatibility/subjects/{s}/versions[/{v}]`: the reasons the
/// schema is incompatible, empty when it is compatible.
pub fn check_compatibility(
    state: &State,
    subject: &str,
    version: Option<VersionSpec>,
    req: SchemaRequest,
    normalize: bool,
) -> Result<Vec<String>, ApiError> {
    let (_, parsed) = request_body(state, req, normalize)?;
    let level = state.level(subject);
    match version {
        None => {
            let live = state.versions(subject, false);
            Ok(compat::check(level, &parsed, &parse_versions(state, &live)))
        }
        Some(spec) => {
            let v = find_version(state, subject, spec, false)?;
            Ok(compat::check(level, &parsed, &parse_versions(state, &[v])))
        }
    }
}

fn refuse_if_referenced(state: &State, subject: &str, version: i32) -> Result<(), ApiError> {
    let by = state.referenced_by(subject, version);
    if by.is_empty() {
        return Ok(());
    }
    Err(ApiError::reference_exists(format!(
        "One or more references exist to the schema {{subject={subject},version={version}}}: {by:?}"
    )))
}

/// The NOOP record that keeps the highest id through compaction, written
/// before a permanent delete's tombstones.
fn max_id_entry(state: &State) -> Result<Entry, ApiError> {
    entry(
        &Key::noop(),
        Some(&NoopValue {
            max_id: state.max_id,
        }),
    )
}

/// `DELETE /subjects/{s}[?permanent=true]`: the versions deleted.
pub async fn delete_subject(
    store: &mut Store,
    subject: &str,
    permanent: bool,
) -> Result<Vec<i32>, ApiError> {
    store.catch_up(0).await.map_err(store_err)?;
    let state = &store.state;
    ensure_writable(state, subject)?;
    let all = state.versions(subject, true);
    if all.is_empty() {
        return Err(ApiError::subject_not_found(subject));
    }
    let live = state.versions(subject, false);
    for v in &all {
        refuse_if_referenced(state, subject, v.version)?;
    }
    let mut entries = Vec::new();
    let versions: Vec<i32>;
    if permanent {
        if !live.is_empty() {
            return Err(ApiError::subject_not_soft_deleted(subject));
        }
        versions = all.iter().map(|v| v.version).collect();
        entries.push(max_id_entry(state)?);
        for v in &versions {
            entries.push(Entry::tombstone(&Key::schema(subject, *v)).map_err(store_err)?);
        }
        if state.subject_levels.contains_key(subject) {
            entries.push(Entry::tombstone(&Key::config(Some(subject))).map_err(store_err)?);
        }
        if state.subject_modes.contains_key(subject) {
            entries.push(Entry::tombstone(&Key::mode(Some(subject))).map_err(store_err)?);
        }
    } else {
        let last = live
            .last()
            .ok_or_else(|| ApiError::subject_soft_deleted(subject))?;
        versions = live.iter().map(|v| v.version).collect();
        for v in &live {
            let deleted = SchemaValue {
                deleted: true,
                ..(*v).clone()
            };
            entries.push(entry(&Key::schema(subject, v.version), Some(&deleted))?);
        }
        let marker = DeleteSubjectValue {
            subject: subject.to_string(),
            version: last.version,
        };
        entries.push(entry(&Key::delete_subject(subject), Some(&marker))?);
    }
    store.append(&entries).await.map_err(store_err)?;
    Ok(versions)
}

/// `DELETE /subjects/{s}/versions/{v}[?permanent=true]`: the version deleted.
pub async fn delete_version(
    store: &mut Store,
    subject: &str,
    spec: VersionSpec,
    permanent: bool,
) -> Result<i32, ApiError> {
    store.catch_up(0).await.map_err(store_err)?;
    let state = &store.state;
    ensure_writable(state, subject)?;
    // A numbered version may be soft-deleted already (40406 for a second
    // soft delete; a permanent delete needs it); `latest` is the latest
    // live one for a soft delete.
    let include_deleted = permanent || matches!(spec, VersionSpec::Number(_));
    let v = find_version(state, subject, spec, include_deleted)?;
    refuse_if_referenced(state, subject, v.version)?;
    let key = Key::schema(subject, v.version);
    let entries = match (permanent, v.deleted) {
        (false, true) => return Err(ApiError::version_soft_deleted(subject, v.version)),
        (true, false) => return Err(ApiError::version_not_soft_deleted(subject, v.version)),
        (false, false) => {
            let deleted = SchemaValue {
                deleted: true,
                ..v.clone()
            };
            vec![entry(&key, Some(&deleted))?]
        }
        (true, true) => vec![
            max_id_entry(state)?,
            Entry::tombstone(&key).map_err(store_err)?,
        ],
    };
    let version = v.version;
    store.append(&entries).await.map_err(store_err)?;
    Ok(version)
}

/// `PUT /config[/{s}]`: sets the compatibility level.
pub async fn set_level(
    store: &mut Store,
    subject: Option<&str>,
    level: &str,
) -> Result<Level, ApiError> {
    let parsed: Level = level
        .parse()
        .map_err(|()| ApiError::invalid_compatibility_level(level))?;
    let value = ConfigValue {
        compatibility_level: parsed.to_string(),
    };
    let e = entry(&Key::config(subject), Some(&value))?;
    store.append(&[e]).await.map_err(store_err)?;
    Ok(parsed)
}

/// `DELETE /config[/{s}]`: clears the level; returns the one it replaced.
pub async fn clear_level(store: &mut Store, subject: Option<&str>) -> Result<Level, ApiError> {
    let previous = match subject {
        None => store.state.global_level.unwrap_or_default(),
        Some(s) => match store.state.subject_levels.get(s) {
            Some(l) => *l,
            None if store.state.subjects.contains_key(s) => {
                return Err(ApiError::subject_level_not_configured(s))
            }
            None => return Err(ApiError::subject_not_found(s)),
        },
    };
    let e = Entry::tombstone(&Key::config(subject)).map_err(store_err)?;
    store.append(&[e]).await.map_err(store_err)?;
    Ok(previous)
}

/// `PUT /mode[/{s}]`: sets the mode.
pub async fn set_mode(
    store: &mut Store,
    subject: Option<&str>,
    mode: &str,
) -> Result<String, ApiError> {
    let mode = mode.to_ascii_uppercase();
    if !MODES.contains(&mode.as_str()) {
        return Err(ApiError::invalid_mode(&mode));
    }
    let value = ModeValue { mode: mode.clone() };
    let e = entry(&Key::mode(subject), Some(&value))?;
    store.append(&[e]).await.map_err(store_err)?;
    Ok(mode)
}
