//! Compatibility levels and which earlier versions a new schema is checked
//! against, as Confluent's registry does:
//! - BACKWARD: the new schema reads data written with the latest version.
//! - FORWARD: the latest version reads data written with the new schema.
//! - FULL: both.
//! - The `_TRANSITIVE` variants check every earlier (not deleted) version
//!   instead of only the latest.
//! - NONE: no check.

use std::fmt;
use std::str::FromStr;

use crate::schema::Parsed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

/// Which way data must be readable between the new schema and an old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new schema reads what the old one wrote.
    Backward,
    /// The old schema reads what the new one wrote.
    Forward,
    Both,
}

const NAMES: &[(Level, &str)] = &[
    (Level::Backward, "BACKWARD"),
    (Level::BackwardTransitive, "BACKWARD_TRANSITIVE"),
    (Level::Forward, "FORWARD"),
    (Level::ForwardTransitive, "FORWARD_TRANSITIVE"),
    (Level::Full, "FULL"),
    (Level::FullTransitive, "FULL_TRANSITIVE"),
    (Level::None, "NONE"),
];

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES
            .iter()
            .find(|(l, _)| l == self)
            .map_or("NONE", |(_, n)| n);
        f.write_str(name)
    }
}

impl FromStr for Level {
    type Err = ();

    /// Confluent accepts the level names in any case.
    fn from_str(s: &str) -> Result<Level, ()> {
        NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(l, _)| *l)
            .ok_or(())
    }
}

impl Level {
    fn direction(self) -> Option<Direction> {
        match self {
            Level::Backward | Level::BackwardTransitive => Some(Direction::Backward),
            Level::Forward | Level::ForwardTransitive => Some(Direction::Forward),
            Level::Full | Level::FullTransitive => Some(Direction::Both),
            Level::None => None,
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

/// The reasons `new` and `old` are incompatible in `direction`, for a
/// type whose checker lists every difference from an original to an
/// update (Protobuf, JSON Schema): BACKWARD looks at old → new, FORWARD
/// at new → old, and only the differences `compatible` refuses count.
pub fn directional_reasons<T, C: std::fmt::Debug + Copy>(
    new: &T,
    old: &T,
    direction: Direction,
    differences: fn(&T, &T) -> Vec<(String, C)>,
    compatible: fn(C) -> bool,
) -> Vec<String> {
    let mut pairs = Vec::new();
    if matches!(direction, Direction::Backward | Direction::Both) {
        pairs.push((old, new));
    }
    if matches!(direction, Direction::Forward | Direction::Both) {
        pairs.push((new, old));
    }
    pairs
        .into_iter()
        .flat_map(|(original, update)| differences(original, update))
        .filter(|(_, change)| !compatible(*change))
        .map(|(path, change)| format!("{change:?} at {path}"))
        .collect()
}

/// Whether any difference recorded after `mark` is one `compatible`
/// refuses (a nested comparison's verdict).
pub fn incompatible_since<C: Copy>(
    changes: &[(String, C)],
    mark: usize,
    compatible: fn(C) -> bool,
) -> bool {
    changes
        .get(mark..)
        .is_some_and(|c| c.iter().any(|(_, c)| !compatible(*c)))
}

/// Checks `new` against `previous` (oldest first) under `level`; returns
/// the reasons it is incompatible, empty when it is compatible.
pub fn check(level: Level, new: &Parsed, previous: &[Parsed]) -> Vec<String> {
    let Some(direction) = level.direction() else {
        return Vec::new();
    };
    let against: Box<dyn Iterator<Item = &Parsed>> = if level.transitive() {
        Box::new(previous.iter().rev())
    } else {
        Box::new(previous.last().into_iter())
    };
    for old in against {
        let reasons = new.check(old, direction);
        if !reasons.is_empty() {
            return reasons;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SchemaType;

    fn avro(fields: &str) -> Parsed {
        let s = format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#);
        Parsed::parse(SchemaType::Avro, &s, &[]).unwrap()
    }

    const A: &str = r#"{"name":"a","type":"string"}"#;
    const B_NO_DEFAULT: &str = r#"{"name":"b","type":"int"}"#;
    const B_DEFAULT: &str = r#"{"name":"b","type":"int","default":0}"#;
    const C_DEFAULT: &str = r#"{"name":"c","type":"long","default":1}"#;

    #[test]
    fn names_parse_in_any_case_and_print_as_confluent_does() {
        for (level, name) in NAMES {
            assert_eq!(name.parse::<Level>(), Ok(*level));
            assert_eq!(name.to_lowercase().parse::<Level>(), Ok(*level));
            assert_eq!(level.to_string(), *name);
        }
        assert!("SIDEWAYS".parse::<Level>().is_err());
    }

    #[test]
    fn backward_needs_defaults_for_added_fields() {
        let v1 = avro(A);
        let added_without = avro(&format!("{A},{B_NO_DEFAULT}"));
        let added_with = avro(&format!("{A},{B_DEFAULT}"));
        assert!(!check(Level::Backward, &added_without, &[avro(A)]).is_empty());
        assert!(check(Level::Backward, &added_with, std::slice::from_ref(&v1)).is_empty());
        // Removing a field: the new schema ignores it, so backward holds.
        assert!(check(
            Level::Backward,
            &avro(A),
            &[avro(&format!("{A},{B_NO_DEFAULT}"))]
        )
        .is_empty());
    }

    #[test]
    fn forward_needs_defaults_for_removed_fields() {
        let old = avro(&format!("{A},{B_NO_DEFAULT}"));
        assert!(!check(Level::Forward, &avro(A), std::slice::from_ref(&old)).is_empty());
        let old = avro(&format!("{A},{B_DEFAULT}"));
        assert!(check(Level::Forward, &avro(A), std::slice::from_ref(&old)).is_empty());
        // Adding a field without a default: old readers ignore it.
        assert!(check(
            Level::Forward,
            &avro(&format!("{A},{B_NO_DEFAULT}")),
            &[avro(A)]
        )
        .is_empty());
    }

    #[test]
    fn full_needs_both_and_none_needs_nothing() {
        let old = avro(A);
        let with_default = avro(&format!("{A},{B_DEFAULT}"));
        let without = avro(&format!("{A},{B_NO_DEFAULT}"));
        assert!(check(Level::Full, &with_default, std::slice::from_ref(&old)).is_empty());
        assert!(!check(Level::Full, &without, std::slice::from_ref(&old)).is_empty());
        let string_only = avro(r#"{"name":"a","type":"int"}"#);
        assert!(!check(Level::Backward, &string_only, std::slice::from_ref(&old)).is_empty());
        assert!(check(Level::None, &string_only, std::slice::from_ref(&old)).is_empty());
    }

    #[test]
    fn transitive_checks_every_earlier_version_plain_only_the_latest() {
        // v1 has b without a default; v2 drops b; v3 adds b back with a
        // different type. v3 reads v2's data (b defaulted) but not v1's.
        let v1 = avro(&format!("{A},{B_NO_DEFAULT}"));
        let v2 = avro(A);
        let v3 = avro(r#"{"name":"a","type":"string"},{"name":"b","type":"string","default":"x"}"#);
        let history = [v1, v2];
        assert!(check(Level::Backward, &v3, &history).is_empty());
        assert!(!check(Level::BackwardTransitive, &v3, &history).is_empty());
        let v3_ok = avro(&format!("{A},{C_DEFAULT}"));
        assert!(check(Level::BackwardTransitive, &v3_ok, &history).is_empty());
        assert!(check(Level::FullTransitive, &v3_ok, &[]).is_empty());
    }
}
