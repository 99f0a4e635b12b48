//! Confluent's REST API over axum: routes, query flags, request bodies and
//! JSON answers. Every handler takes the store's lock, so requests run one
//! at a time against one consistent state; the registry's load is small
//! (clients cache ids) and a write must see every earlier one.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::error::{json_response, ApiError};
use crate::ops::{self, parse_version, SchemaRequest};
use crate::schema::SchemaType;
use crate::store::Store;

/// The largest request body accepted: a schema with its JSON escaping,
/// well below the `_schemas` topic's 1 MiB `max.message.bytes`.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

type Shared = Arc<Mutex<Store>>;
type Flags = Query<HashMap<String, String>>;
type Answer = Result<Response, ApiError>;

fn flag(q: &Flags, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn ok(body: Value) -> Answer {
    Ok(json_response(StatusCode::OK, &body))
}

fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError {
        code: u32::from(e.status().as_u16()),
        message: e.body_text(),
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            ApiError {
                code: 422,
                message: format!("Unrecognized or missing field: {e}"),
            }
        } else {
            ApiError::bad_request(format!("Malformed JSON: {e}"))
        }
    })
}

pub fn router(store: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{s}", post(lookup).delete(delete_subject))
        .route("/subjects/{s}/versions", get(list_versions).post(register))
        .route(
            "/subjects/{s}/versions/{v}",
            get(get_version::<false>).delete(delete_version),
        )
        .route(
            "/subjects/{s}/versions/{v}/schema",
            get(get_version::<true>),
        )
        .route(
            "/subjects/{s}/versions/{v}/referencedby",
            get(referenced_by),
        )
        .route(
            "/schemas/types",
            get(|| async { ok(json!(SchemaType::SUPPORTED)) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id::<false>))
        .route("/schemas/ids/{id}/schema", get(schema_by_id::<true>))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route(
            "/config",
            get(get_config).put(put_config).delete(delete_config),
        )
        .route(
            "/config/{s}",
            get(get_config).put(put_config).delete(delete_config),
        )
        .route("/compatibility/subjects/{s}/versions", post(compat))
        .route("/compatibility/subjects/{s}/versions/{v}", post(compat))
        .route("/mode", get(get_mode).put(put_mode))
        .route("/mode/{s}", get(get_mode).put(put_mode))
        .fallback(|| async { ApiError::not_found().into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}

async fn list_subjects(AxState(st): AxState<Shared>, q: Flags) -> Answer {
    let store = st.lock().await;
    let deleted = flag(&q, "deleted");
    let prefix = q.get("subjectPrefix").map_or("", String::as_str);
    let names: Vec<&String> = store
        .state
        .subjects
        .iter()
        .filter(|(name, vs)| name.starts_with(prefix) && vs.values().any(|v| deleted || !v.deleted))
        .map(|(name, _)| name)
        .collect();
    ok(json!(names))
}

async fn list_versions(AxState(st): AxState<Shared>, Path(s): Path<String>, q: Flags) -> Answer {
    let store = st.lock().await;
    let versions: Vec<i32> = store
        .state
        .versions(&s, flag(&q, "deleted"))
        .iter()
        .map(|v| v.version)
        .collect();
    if versions.is_empty() {
        return Err(ApiError::subject_not_found(&s));
    }
    ok(json!(versions))
}

async fn register(
    AxState(st): AxState<Shared>,
    Path(s): Path<String>,
    q: Flags,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let req: SchemaRequest = parse_json(body)?;
    let mut store = st.lock().await;
    let id = ops::register(&mut store, &s, req, flag(&q, "normalize")).await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    AxState(st): AxState<Shared>,
    Path(s): Path<String>,
    q: Flags,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let req: SchemaRequest = parse_json(body)?;
    let store = st.lock().await;
    ok(ops::lookup(
        &store.state,
        &s,
        req,
        flag(&q, "normalize"),
        flag(&q, "deleted"),
    )?)
}

async fn delete_subject(AxState(st): AxState<Shared>, Path(s): Path<String>, q: Flags) -> Answer {
    let mut store = st.lock().await;
    ok(json!(
        ops::delete_subject(&mut store, &s, flag(&q, "permanent")).await?
    ))
}

/// `GET /subjects/{s}/versions/{v}`, and its `/schema` (`RAW`): the
/// schema's own text.
async fn get_version<const RAW: bool>(
    AxState(st): AxState<Shared>,
    Path((s, v)): Path<(String, String)>,
    q: Flags,
) -> Answer {
    let spec = parse_version(&v)?;
    let store = st.lock().await;
    let found = ops::find_version(&store.state, &s, spec, flag(&q, "deleted"))?;
    let text = ops::formatted(
        &store.state,
        &crate::state::body_of(found),
        q.get("format").map(String::as_str),
    )?;
    if RAW {
        return Ok(raw_schema(&text));
    }
    let mut out = ops::version_json(found);
    if let Some(map) = out.as_object_mut() {
        map.insert("schema".into(), json!(text));
    }
    ok(out)
}

/// A schema's own text as the answer's body, as Confluent sends it.
fn raw_schema(text: &str) -> Response {
    let mut resp = (StatusCode::OK, text.to_string()).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(crate::error::CONTENT_TYPE),
    );
    resp
}

async fn delete_version(
    AxState(st): AxState<Shared>,
    Path((s, v)): Path<(String, String)>,
    q: Flags,
) -> Answer {
    let spec = parse_version(&v)?;
    let mut store = st.lock().await;
    ok(json!(
        ops::delete_version(&mut store, &s, spec, flag(&q, "permanent")).await?
    ))
}

async fn referenced_by(
    AxState(st): AxState<Shared>,
    Path((s, v)): Path<(String, String)>,
) -> Answer {
    let spec = parse_version(&v)?;
    let store = st.lock().await;
    let found = ops::find_version(&store.state, &s, spec, false)?;
    let ids: Vec<i32> = store
        .state
        .referenced_by(&s, found.version)
        .iter()
        .filter_map(|(subject, version)| {
            store
                .state
                .subjects
                .get(subject)
                .and_then(|vs| vs.get(version))
                .map(|v| v.id)
        })
        .collect();
    ok(json!(ids))
}

fn parse_id(id: &str) -> Result<i32, ApiError> {
    id.parse::<i32>().map_err(|_| ApiError::schema_not_found())
}

/// `GET /schemas/ids/{id}`, and its `/schema` (`RAW`): the schema's own text.
async fn schema_by_id<const RAW: bool>(
    AxState(st): AxState<Shared>,
    Path(id): Path<String>,
    q: Flags,
) -> Answer {
    let id = parse_id(&id)?;
    let store = st.lock().await;
    let body = store
        .state
        .ids
        .get(&id)
        .ok_or_else(ApiError::schema_not_found)?;
    let text = ops::formatted(&store.state, body, q.get("format").map(String::as_str))?;
    if RAW {
        return Ok(raw_schema(&text));
    }
    let mut out = json!({ "schema": text });
    ops::add_type_and_references(&mut out, body.schema_type, &body.references);
    ok(out)
}

/// Every (subject, version) that uses `id`, soft-deleted ones when asked.
fn uses_of(store: &Store, id: i32, deleted: bool) -> Result<Vec<(String, i32)>, ApiError> {
    if !store.state.ids.contains_key(&id) {
        return Err(ApiError::schema_not_found());
    }
    Ok(store
        .state
        .subjects
        .values()
        .flat_map(|vs| vs.values())
        .filter(|v| v.id == id && (deleted || !v.deleted))
        .map(|v| (v.subject.clone(), v.version))
        .collect())
}

async fn versions_by_id(AxState(st): AxState<Shared>, Path(id): Path<String>, q: Flags) -> Answer {
    let id = parse_id(&id)?;
    let store = st.lock().await;
    let uses = uses_of(&store, id, flag(&q, "deleted"))?;
    let out: Vec<Value> = uses
        .iter()
        .map(|(s, v)| json!({ "subject": s, "version": v }))
        .collect();
    ok(json!(out))
}

async fn subjects_by_id(AxState(st): AxState<Shared>, Path(id): Path<String>, q: Flags) -> Answer {
    let id = parse_id(&id)?;
    let store = st.lock().await;
    let mut subjects: Vec<String> = uses_of(&store, id, flag(&q, "deleted"))?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    ok(json!(subjects))
}

#[derive(serde::Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

#[derive(serde::Deserialize)]
struct ModeRequest {
    mode: String,
}

/// The subject of `/config/{s}` and `/mode/{s}`; `None` on `/config` and
/// `/mode` (the global setting).
type Subject = Option<Path<String>>;

fn subject_of(s: &Subject) -> Option<&str> {
    s.as_ref().map(|Path(s)| s.as_str())
}

async fn get_config(AxState(st): AxState<Shared>, s: Subject, q: Flags) -> Answer {
    let store = st.lock().await;
    let global = store.state.global_level.unwrap_or_default();
    let level = match subject_of(&s) {
        None => global,
        Some(s) => match store.state.subject_levels.get(s) {
            Some(level) => *level,
            None if flag(&q, "defaultToGlobal") => global,
            None => return Err(ApiError::subject_level_not_configured(s)),
        },
    };
    ok(json!({ "compatibilityLevel": level.to_string() }))
}

async fn put_config(
    AxState(st): AxState<Shared>,
    s: Subject,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let req: ConfigRequest = parse_json(body)?;
    let mut store = st.lock().await;
    let level = ops::set_level(&mut store, subject_of(&s), &req.compatibility).await?;
    ok(json!({ "compatibility": level.to_string() }))
}

async fn delete_config(AxState(st): AxState<Shared>, s: Subject) -> Answer {
    let mut store = st.lock().await;
    let previous = ops::clear_level(&mut store, subject_of(&s)).await?;
    ok(json!({ "compatibilityLevel": previous.to_string() }))
}

/// `/compatibility/subjects/{s}/versions[/{v}]`: against the versions the
/// subject's level names, or against version `v`.
async fn compat(
    AxState(st): AxState<Shared>,
    Path(params): Path<HashMap<String, String>>,
    q: Flags,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let version = params.get("v").map(|v| parse_version(v)).transpose()?;
    let s = params.get("s").map_or("", String::as_str);
    let req: SchemaRequest = parse_json(body)?;
    let store = st.lock().await;
    let reasons = ops::check_compatibility(&store.state, s, version, req, flag(&q, "normalize"))?;
    if flag(&q, "verbose") {
        return ok(json!({ "is_compatible": reasons.is_empty(), "messages": reasons }));
    }
    ok(json!({ "is_compatible": reasons.is_empty() }))
}

async fn get_mode(AxState(st): AxState<Shared>, s: Subject) -> Answer {
    let store = st.lock().await;
    ok(json!({ "mode": store.state.mode(subject_of(&s)) }))
}

async fn put_mode(
    AxState(st): AxState<Shared>,
    s: Subject,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let req: ModeRequest = parse_json(body)?;
    let mut store = st.lock().await;
    ok(json!({ "mode": ops::set_mode(&mut store, subject_of(&s), &req.mode).await? }))
}
