//! The registry's state in memory: what the `_schemas` records so far say.
//! It changes only by `apply`, one record at a time in log order, so the
//! state after a restart is the state before it.

use std::collections::{BTreeMap, HashMap};

use crate::compat::Level;
use crate::log_format::{Decoded, SchemaValue};
use crate::schema::{identity, SchemaBody};

/// The modes Confluent's registry has; only READONLY refuses writes here.
pub const MODES: &[&str] = &["READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT"];
pub const DEFAULT_MODE: &str = "READWRITE";

#[derive(Debug, Default)]
pub struct State {
    /// subject → version → the SCHEMA value (soft-deleted ones included).
    pub subjects: BTreeMap<String, BTreeMap<i32, SchemaValue>>,
    /// id → the schema it names, while any subject version uses it.
    pub ids: BTreeMap<i32, SchemaBody>,
    /// How many subject versions use each id.
    id_uses: BTreeMap<i32, usize>,
    /// `schema::identity` → id, for "the same schema gets the same id".
    by_identity: HashMap<String, i32>,
    /// The highest id ever given out, deleted or not.
    pub max_id: i32,
    pub global_level: Option<Level>,
    pub subject_levels: BTreeMap<String, Level>,
    pub global_mode: Option<String>,
    pub subject_modes: BTreeMap<String, String>,
}

pub fn body_of(v: &SchemaValue) -> SchemaBody {
    SchemaBody {
        schema_type: v.schema_type,
        schema: v.schema.clone(),
        references: v.references.clone(),
    }
}

impl State {
    pub fn apply(&mut self, record: Decoded) {
        match record {
            Decoded::Schema {
                subject,
                version,
                value,
            } => {
                self.remove_version(&subject, version);
                if let Some(v) = value {
                    self.add_version(v);
                }
            }
            Decoded::DeleteSubject(d) => {
                if let Some(versions) = self.subjects.get_mut(&d.subject) {
                    for (_, v) in versions.range_mut(..=d.version) {
                        v.deleted = true;
                    }
                }
            }
            Decoded::Config { subject, value } => {
                let level = value.and_then(|v| v.compatibility_level.parse::<Level>().ok());
                match (subject, level) {
                    (None, level) => self.global_level = level,
                    (Some(s), Some(level)) => {
                        self.subject_levels.insert(s, level);
                    }
                    (Some(s), None) => {
                        self.subject_levels.remove(&s);
                    }
                }
            }
            Decoded::Mode { subject, value } => {
                let mode = value
                    .map(|v| v.mode)
                    .filter(|m| MODES.contains(&m.as_str()));
                match (subject, mode) {
                    (None, mode) => self.global_mode = mode,
                    (Some(s), Some(mode)) => {
                        self.subject_modes.insert(s, mode);
                    }
                    (Some(s), None) => {
                        self.subject_modes.remove(&s);
                    }
                }
            }
            Decoded::Noop(value) => {
                if let Some(v) = value {
                    self.max_id = self.max_id.max(v.max_id);
                }
            }
        }
    }

    fn add_version(&mut self, v: SchemaValue) {
        let body = body_of(&v);
        self.by_identity.entry(identity(&body)).or_insert(v.id);
        self.ids.entry(v.id).or_insert(body);
        let uses = self.id_uses.entry(v.id).or_insert(0);
        *uses = uses.saturating_add(1);
        self.max_id = self.max_id.max(v.id);
        self.subjects
            .entry(v.subject.clone())
            .or_default()
            .insert(v.version, v);
    }

    fn remove_version(&mut self, subject: &str, version: i32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(old) = versions.remove(&version) else {
            return;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        let uses = self.id_uses.entry(old.id).or_insert(1);
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            self.id_uses.remove(&old.id);
            if let Some(body) = self.ids.remove(&old.id) {
                self.by_identity.remove(&identity(&body));
            }
        }
    }

    /// The id of a schema already registered anywhere, if any.
    pub fn id_of(&self, body: &SchemaBody) -> Option<i32> {
        self.by_identity.get(&identity(body)).copied()
    }

    /// The subject's versions, oldest first, without the soft-deleted ones
    /// unless `deleted`.
    pub fn versions(&self, subject: &str, deleted: bool) -> Vec<&SchemaValue> {
        self.subjects
            .get(subject)
            .map(|vs| vs.values().filter(|v| deleted || !v.deleted).collect())
            .unwrap_or_default()
    }

    /// The ids of each subject's live (not soft-deleted) versions.
    pub fn live_ids(&self) -> HashMap<String, crate::SubjectIds> {
        self.subjects
            .iter()
            .map(|(s, vs)| {
                let ids = vs
                    .values()
                    .filter(|v| !v.deleted)
                    .map(|v| (v.id, v.schema_type))
                    .collect();
                (s.clone(), ids)
            })
            .collect()
    }

    pub fn level(&self, subject: &str) -> Level {
        self.subject_levels
            .get(subject)
            .copied()
            .or(self.global_level)
            .unwrap_or_default()
    }

    pub fn mode(&self, subject: Option<&str>) -> &str {
        subject
            .and_then(|s| self.subject_modes.get(s))
            .or(self.global_mode.as_ref())
            .map_or(DEFAULT_MODE, String::as_str)
    }

    /// Live (not soft-deleted) subject versions whose schema references
    /// `subject` at `version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<(String, i32)> {
        self.subjects
            .values()
            .flat_map(|vs| vs.values())
            .filter(|v| !v.deleted)
            .filter(|v| {
                v.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|v| (v.subject.clone(), v.version))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_format::{ConfigValue, DeleteSubjectValue, NoopValue};
    use crate::schema::SchemaType;

    fn schema(subject: &str, version: i32, id: i32, text: &str) -> Decoded {
        Decoded::Schema {
            subject: subject.into(),
            version,
            value: Some(SchemaValue {
                subject: subject.into(),
                version,
                id,
                schema_type: SchemaType::Avro,
                references: vec![],
                schema: text.into(),
                deleted: false,
            }),
        }
    }

    fn tombstone(subject: &str, version: i32) -> Decoded {
        Decoded::Schema {
            subject: subject.into(),
            version,
            value: None,
        }
    }

    #[test]
    fn ids_outlive_one_subject_and_max_id_outlives_all() {
        let mut st = State::default();
        st.apply(schema("a", 1, 1, r#""string""#));
        st.apply(schema("b", 1, 1, r#""string""#));
        st.apply(schema("a", 2, 2, r#""int""#));
        st.apply(tombstone("a", 1));
        assert!(st.ids.contains_key(&1), "b still uses id 1");
        st.apply(tombstone("b", 1));
        st.apply(tombstone("a", 2));
        assert!(st.ids.is_empty());
        assert!(st.subjects.is_empty());
        assert_eq!(st.max_id, 2);
        // After compaction only a NOOP carries the max id.
        let mut fresh = State::default();
        fresh.apply(Decoded::Noop(Some(NoopValue { max_id: 2 })));
        fresh.apply(Decoded::Noop(None));
        assert_eq!(fresh.max_id, 2);
    }

    #[test]
    fn delete_subject_soft_deletes_up_to_its_version() {
        let mut st = State::default();
        st.apply(schema("a", 1, 1, r#""string""#));
        st.apply(schema("a", 2, 2, r#""int""#));
        st.apply(Decoded::DeleteSubject(DeleteSubjectValue {
            subject: "a".into(),
            version: 1,
        }));
        let live: Vec<i32> = st.versions("a", false).iter().map(|v| v.version).collect();
        assert_eq!(live, vec![2]);
        assert_eq!(st.versions("a", true).len(), 2);
    }

    #[test]
    fn config_records_set_and_clear_levels() {
        let mut st = State::default();
        assert_eq!(st.level("s"), Level::Backward);
        let full = |s: Option<&str>| Decoded::Config {
            subject: s.map(Into::into),
            value: Some(ConfigValue {
                compatibility_level: "FULL".into(),
            }),
        };
        st.apply(full(None));
        assert_eq!(st.level("s"), Level::Full);
        st.apply(Decoded::Config {
            subject: Some("s".into()),
            value: Some(ConfigValue {
                compatibility_level: "NONE".into(),
            }),
        });
        assert_eq!(st.level("s"), Level::None);
        st.apply(Decoded::Config {
            subject: Some("s".into()),
            value: None,
        });
        assert_eq!(st.level("s"), Level::Full);
    }
}
