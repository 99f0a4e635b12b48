//! JSON Schema compatibility, after Confluent's rules
//! (`io.confluent.kafka.schemaregistry.json.diff`): an original schema is
//! compared to an update and every difference classified (`Change`);
//! BACKWARD compares old to new, FORWARD new to old. As in Confluent's
//! rules, an object without `additionalProperties: false` is an *open
//! content model*: removing a property from it is compatible, adding one
//! (other than `{}`) is not, since data under the old schema may hold any
//! value under that name.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value};

use crate::compat::Direction;
use crate::json_schema::{sorted, JsonSchema, MAX_DEPTH};

/// One kind of difference between two JSON Schemas, as Confluent's
/// `Difference.Type` names them (the kinds this registry detects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    TypeChanged,
    TypeExtended,
    TypeNarrowed,
    MaxLengthAdded,
    MaxLengthRemoved,
    MaxLengthIncreased,
    MaxLengthDecreased,
    MinLengthAdded,
    MinLengthRemoved,
    MinLengthIncreased,
    MinLengthDecreased,
    PatternAdded,
    PatternRemoved,
    PatternChanged,
    MaximumAdded,
    MaximumRemoved,
    MaximumIncreased,
    MaximumDecreased,
    MinimumAdded,
    MinimumRemoved,
    MinimumIncreased,
    MinimumDecreased,
    ExclusiveMaximumAdded,
    ExclusiveMaximumRemoved,
    ExclusiveMaximumIncreased,
    ExclusiveMaximumDecreased,
    ExclusiveMinimumAdded,
    ExclusiveMinimumRemoved,
    ExclusiveMinimumIncreased,
    ExclusiveMinimumDecreased,
    MultipleOfAdded,
    MultipleOfRemoved,
    MultipleOfReduced,
    MultipleOfExpanded,
    MultipleOfChanged,
    EnumArrayExtended,
    EnumArrayNarrowed,
    EnumArrayChanged,
    ConstChanged,
    NotTypeExtended,
    NotTypeNarrowed,
    RequiredAttributeAdded,
    RequiredAttributeWithDefaultAdded,
    RequiredAttributeRemoved,
    PropertyAddedToOpenContentModel,
    PropertyWithEmptySchemaAddedToOpenContentModel,
    PropertyRemovedFromOpenContentModel,
    PropertyRemovedFromClosedContentModel,
    PropertyWithFalseRemovedFromClosedContentModel,
    PropertyAddedIsCoveredByPartiallyOpenContentModel,
    PropertyAddedNotCoveredByPartiallyOpenContentModel,
    PropertyRemovedIsCoveredByPartiallyOpenContentModel,
    PropertyRemovedNotCoveredByPartiallyOpenContentModel,
    RequiredPropertyAddedToUnopenContentModel,
    RequiredPropertyWithDefaultAddedToUnopenContentModel,
    OptionalPropertyAddedToUnopenContentModel,
    AdditionalPropertiesAdded,
    AdditionalPropertiesRemoved,
    AdditionalPropertiesNarrowed,
    AdditionalPropertiesExtended,
    MaxPropertiesAdded,
    MaxPropertiesRemoved,
    MaxPropertiesIncreased,
    MaxPropertiesDecreased,
    MinPropertiesAdded,
    MinPropertiesRemoved,
    MinPropertiesIncreased,
    MinPropertiesDecreased,
    MaxItemsAdded,
    MaxItemsRemoved,
    MaxItemsIncreased,
    MaxItemsDecreased,
    MinItemsAdded,
    MinItemsRemoved,
    MinItemsIncreased,
    MinItemsDecreased,
    UniqueItemsAdded,
    UniqueItemsRemoved,
    ItemAddedToOpenContentModel,
    ItemWithEmptySchemaAddedToOpenContentModel,
    ItemAddedToClosedContentModel,
    ItemRemovedFromOpenContentModel,
    ItemRemovedFromClosedContentModel,
    CombinedTypeChanged,
    CombinedTypeExtended,
    CombinedTypeSubschemasChanged,
    ProductTypeExtended,
    ProductTypeNarrowed,
    SumTypeExtended,
    SumTypeNarrowed,
    DependencyArrayAdded,
    DependencyArrayRemoved,
    DependencyArrayExtended,
    DependencyArrayNarrowed,
    DependencyArrayChanged,
    DependencySchemaAdded,
    DependencySchemaRemoved,
    MaxContainsAdded,
    MaxContainsRemoved,
    MaxContainsIncreased,
    MaxContainsDecreased,
    MinContainsAdded,
    MinContainsRemoved,
    MinContainsIncreased,
    MinContainsDecreased,
}

impl Change {
    /// Confluent's `SchemaDiff.COMPATIBLE_CHANGES`, for the kinds above.
    pub fn compatible(self) -> bool {
        use Change::*;
        matches!(
            self,
            TypeExtended
                | MaxLengthIncreased
                | MaxLengthRemoved
                | MinLengthDecreased
                | MinLengthRemoved
                | PatternRemoved
                | MaximumIncreased
                | MaximumRemoved
                | MinimumDecreased
                | MinimumRemoved
                | ExclusiveMaximumIncreased
                | ExclusiveMaximumRemoved
                | ExclusiveMinimumDecreased
                | ExclusiveMinimumRemoved
                | MultipleOfReduced
                | MultipleOfRemoved
                | RequiredAttributeWithDefaultAdded
                | RequiredAttributeRemoved
                | MaxPropertiesIncreased
                | MaxPropertiesRemoved
                | MinPropertiesDecreased
                | MinPropertiesRemoved
                | AdditionalPropertiesAdded
                | AdditionalPropertiesExtended
                | PropertyWithEmptySchemaAddedToOpenContentModel
                | RequiredPropertyWithDefaultAddedToUnopenContentModel
                | OptionalPropertyAddedToUnopenContentModel
                | PropertyWithFalseRemovedFromClosedContentModel
                | PropertyRemovedFromOpenContentModel
                | PropertyAddedIsCoveredByPartiallyOpenContentModel
                | PropertyRemovedIsCoveredByPartiallyOpenContentModel
                | MaxItemsIncreased
                | MaxItemsRemoved
                | MinItemsDecreased
                | MinItemsRemoved
                | UniqueItemsRemoved
                | ItemWithEmptySchemaAddedToOpenContentModel
                | ItemAddedToClosedContentModel
                | ItemRemovedFromOpenContentModel
                | EnumArrayExtended
                | CombinedTypeExtended
                | ProductTypeNarrowed
                | SumTypeExtended
                | NotTypeNarrowed
                | DependencyArrayNarrowed
                | DependencyArrayRemoved
                | DependencySchemaRemoved
                | MaxContainsIncreased
                | MaxContainsRemoved
                | MinContainsDecreased
                | MinContainsRemoved
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Criterion {
    All,
    Any,
    One,
}

/// What kind of schema a value is, as Confluent's parser (everit) sees it.
#[derive(Debug, Clone, PartialEq)]
enum Class {
    False,
    Empty,
    Combined(Criterion, Vec<Value>),
    Not,
    /// `if`/`then`/`else` alone: Confluent compares nothing inside it.
    Conditional,
    Enum,
    Const,
    Object,
    Array,
    String,
    /// `integer` is a number that must be whole.
    Number,
    Boolean,
    Null,
}

fn class_of_type(t: &str) -> Class {
    match t {
        "object" => Class::Object,
        "array" => Class::Array,
        "string" => Class::String,
        "number" | "integer" => Class::Number,
        "boolean" => Class::Boolean,
        _ => Class::Null,
    }
}

const OBJECT_KEYS: &[&str] = &[
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "maxProperties",
    "minProperties",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
];
const ARRAY_KEYS: &[&str] = &[
    "items",
    "additionalItems",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
];
const STRING_KEYS: &[&str] = &["maxLength", "minLength", "pattern"];
const NUMBER_KEYS: &[&str] = &[
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "multipleOf",
];

fn class_of(v: &Value) -> Class {
    let o = match v {
        Value::Bool(false) => return Class::False,
        Value::Object(o) => o,
        _ => return Class::Empty,
    };
    if o.contains_key("if") {
        // Confluent's parser (everit) makes a schema with a conditional and
        // other keywords the synthetic `allOf` of the two.
        let mut rest = o.clone();
        let mut conditional = Map::new();
        for key in ["if", "then", "else"] {
            if let Some(v) = rest.remove(key) {
                conditional.insert(key.to_string(), v);
            }
        }
        let rest = Value::Object(rest);
        if class_of(&rest) == Class::Empty {
            return Class::Conditional;
        }
        return Class::Combined(Criterion::All, vec![rest, Value::Object(conditional)]);
    }
    for (key, c) in [
        ("allOf", Criterion::All),
        ("anyOf", Criterion::Any),
        ("oneOf", Criterion::One),
    ] {
        if let Some(Value::Array(subs)) = o.get(key) {
            return Class::Combined(c, subs.clone());
        }
    }
    if o.contains_key("enum") {
        return Class::Enum;
    }
    if o.contains_key("const") {
        return Class::Const;
    }
    if o.contains_key("not") {
        return Class::Not;
    }
    match o.get("type") {
        Some(Value::String(t)) => return class_of_type(t),
        Some(Value::Array(ts)) if ts.len() == 1 => {
            return class_of_type(ts.first().and_then(Value::as_str).unwrap_or("null"))
        }
        Some(Value::Array(ts)) => {
            // A list of types is a union of one schema per type.
            let subs = ts
                .iter()
                .map(|t| {
                    let mut one = o.clone();
                    one.insert("type".into(), t.clone());
                    Value::Object(one)
                })
                .collect();
            return Class::Combined(Criterion::Any, subs);
        }
        _ => {}
    }
    let has = |keys: &[&str]| keys.iter().any(|k| o.contains_key(*k));
    if has(OBJECT_KEYS) {
        Class::Object
    } else if has(ARRAY_KEYS) {
        Class::Array
    } else if has(STRING_KEYS) {
        Class::String
    } else if has(NUMBER_KEYS) {
        Class::Number
    } else {
        Class::Empty
    }
}

/// The differences found so far, with where.
struct Diff<'a> {
    original: &'a JsonSchema,
    update: &'a JsonSchema,
    changes: Vec<(String, Change)>,
    /// Pairs of subschemas compared already (`$ref`s may recurse).
    visited: HashSet<(usize, usize)>,
}

impl Diff<'_> {
    fn add(&mut self, path: &str, change: Change) {
        self.changes.push((path.to_string(), change));
    }

    fn incompatible_since(&self, mark: usize) -> bool {
        crate::compat::incompatible_since(&self.changes, mark, Change::compatible)
    }

    /// Whether `o` to `u` is compatible, without keeping its differences.
    fn compatible(&mut self, path: &str, o: &Value, u: &Value, depth: usize) -> bool {
        let mark = self.changes.len();
        let visited = self.visited.clone();
        self.compare(path, o, u, depth);
        let ok = !self.incompatible_since(mark);
        self.changes.truncate(mark);
        self.visited = visited;
        ok
    }
}

/// Follows `$ref`s (a bounded number of times).
fn deref<'v>(doc: &'v JsonSchema, mut v: &'v Value) -> &'v Value {
    for _ in 0..MAX_DEPTH {
        match v
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| doc.resolve(r))
        {
            Some(target) => v = target,
            None => break,
        }
    }
    v
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// A bound that may be added, removed, raised or lowered.
fn bound(
    diff: &mut Diff<'_>,
    path: &str,
    (o, u): (Option<f64>, Option<f64>),
    [added, removed, increased, decreased]: [Change; 4],
) {
    match (o, u) {
        (None, Some(_)) => diff.add(path, added),
        (Some(_), None) => diff.add(path, removed),
        (Some(a), Some(b)) if a < b => diff.add(path, increased),
        (Some(a), Some(b)) if a > b => diff.add(path, decreased),
        _ => {}
    }
}

impl Diff<'_> {
    fn compare(&mut self, path: &str, original: &Value, update: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let deeper = depth.saturating_add(1);
        let o = deref(self.original, original);
        let u = deref(self.update, update);
        let key = (o as *const Value as usize, u as *const Value as usize);
        if !self.visited.insert(key) {
            return;
        }
        let (oc, uc) = (class_of(o), class_of(u));
        match (&oc, &uc) {
            (Class::Combined(..), Class::Combined(..)) => {}
            (_, Class::Combined(c, subs)) => {
                if let [only] = subs.as_slice() {
                    if self.compatible(path, o, only, deeper) {
                        self.compare(path, o, only, deeper);
                        return;
                    }
                } else if matches!(c, Criterion::Any | Criterion::One) {
                    for s in subs {
                        if self.compatible(path, o, s, deeper) {
                            self.compare(path, o, s, deeper);
                            self.add(path, Change::SumTypeExtended);
                            return;
                        }
                    }
                }
            }
            (Class::Combined(_, subs), _) => {
                if let [only] = subs.as_slice() {
                    if self.compatible(path, only, u, deeper) {
                        self.compare(path, only, u, deeper);
                        return;
                    }
                }
            }
            _ => {}
        }
        let same = std::mem::discriminant(&oc) == std::mem::discriminant(&uc);
        if !same {
            if oc == Class::False || uc == Class::Empty {
                return;
            }
            self.add(path, Change::TypeChanged);
            return;
        }
        match oc {
            Class::String => self.strings(path, o, u),
            Class::Number => self.numbers(path, o, u),
            Class::Enum => enums(self, path, o, u),
            Class::Const => {
                if o.get("const") != u.get("const") {
                    self.add(path, Change::ConstChanged);
                }
            }
            Class::Not => {
                let (on, un) = (o.get("not"), u.get("not"));
                if let (Some(on), Some(un)) = (on, un) {
                    // `not` reverses the direction.
                    if self.compatible(path, un, on, deeper) {
                        self.add(path, Change::NotTypeNarrowed);
                    } else {
                        self.add(path, Change::NotTypeExtended);
                    }
                }
            }
            Class::Object => self.objects(path, o, u, deeper),
            Class::Array => self.arrays(path, o, u, deeper),
            Class::Combined(c, subs) => {
                if let Class::Combined(uc, usubs) = uc {
                    self.combined(path, (c, &subs), (uc, &usubs), deeper);
                }
            }
            Class::False | Class::Empty | Class::Boolean | Class::Null | Class::Conditional => {}
        }
    }

    fn strings(&mut self, path: &str, o: &Value, u: &Value) {
        use Change::*;
        let at = |k: &str| format!("{path}/{k}");
        let pair = |k: &str| (number(o, k), number(u, k));
        bound(
            self,
            &at("maxLength"),
            pair("maxLength"),
            [
                MaxLengthAdded,
                MaxLengthRemoved,
                MaxLengthIncreased,
                MaxLengthDecreased,
            ],
        );
        bound(
            self,
            &at("minLength"),
            pair("minLength"),
            [
                MinLengthAdded,
                MinLengthRemoved,
                MinLengthIncreased,
                MinLengthDecreased,
            ],
        );
        match (o.get("pattern"), u.get("pattern")) {
            (None, Some(_)) => self.add(&at("pattern"), PatternAdded),
            (Some(_), None) => self.add(&at("pattern"), PatternRemoved),
            (Some(a), Some(b)) if a != b => self.add(&at("pattern"), PatternChanged),
            _ => {}
        }
    }

    fn numbers(&mut self, path: &str, o: &Value, u: &Value) {
        use Change::*;
        let at = |k: &str| format!("{path}/{k}");
        let pair = |k: &str| (number(o, k), number(u, k));
        bound(
            self,
            &at("maximum"),
            pair("maximum"),
            [
                MaximumAdded,
                MaximumRemoved,
                MaximumIncreased,
                MaximumDecreased,
            ],
        );
        bound(
            self,
            &at("minimum"),
            pair("minimum"),
            [
                MinimumAdded,
                MinimumRemoved,
                MinimumIncreased,
                MinimumDecreased,
            ],
        );
        bound(
            self,
            &at("exclusiveMaximum"),
            pair("exclusiveMaximum"),
            [
                ExclusiveMaximumAdded,
                ExclusiveMaximumRemoved,
                ExclusiveMaximumIncreased,
                ExclusiveMaximumDecreased,
            ],
        );
        bound(
            self,
            &at("exclusiveMinimum"),
            pair("exclusiveMinimum"),
            [
                ExclusiveMinimumAdded,
                ExclusiveMinimumRemoved,
                ExclusiveMinimumIncreased,
                ExclusiveMinimumDecreased,
            ],
        );
        match pair("multipleOf") {
            (None, Some(_)) => self.add(&at("multipleOf"), MultipleOfAdded),
            (Some(_), None) => self.add(&at("multipleOf"), MultipleOfRemoved),
            (Some(a), Some(b)) if a != b => {
                let divides = |x: f64, y: f64| y != 0.0 && (x / y).fract() == 0.0;
                if divides(a, b) {
                    self.add(&at("multipleOf"), MultipleOfReduced);
                } else if divides(b, a) {
                    self.add(&at("multipleOf"), MultipleOfExpanded);
                } else {
                    self.add(&at("multipleOf"), MultipleOfChanged);
                }
            }
            _ => {}
        }
        let integer = |v: &Value| v.get("type").and_then(Value::as_str) == Some("integer");
        match (integer(o), integer(u)) {
            (true, false) => self.add(path, TypeExtended),
            (false, true) => self.add(path, TypeNarrowed),
            _ => {}
        }
    }
}

fn enums(diff: &mut Diff<'_>, path: &str, o: &Value, u: &Value) {
    let set = |v: &Value| -> BTreeSet<String> {
        v.get("enum")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| sorted(x).to_string()).collect())
            .unwrap_or_default()
    };
    let (a, b) = (set(o), set(u));
    if a == b {
        return;
    }
    let at = format!("{path}/enum");
    if b.is_superset(&a) {
        diff.add(&at, Change::EnumArrayExtended);
    } else if a.is_superset(&b) {
        diff.add(&at, Change::EnumArrayNarrowed);
    } else {
        diff.add(&at, Change::EnumArrayChanged);
    }
}

/// An object's content model: open (any other property, any value),
/// partially open (other properties must match a schema), or closed.
fn is_open(o: &Value) -> bool {
    o.get("patternProperties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && matches!(
            o.get("additionalProperties"),
            None | Some(Value::Bool(true))
        )
}

/// The schema other properties must match in a partially open model.
/// (Pattern properties are not matched against names here: a property a
/// pattern would cover counts as not covered, the stricter answer.)
fn additional_schema(o: &Value) -> Option<&Value> {
    o.get("additionalProperties").filter(|v| v.is_object())
}

fn permits_additional(o: &Value) -> bool {
    !matches!(o.get("additionalProperties"), Some(Value::Bool(false)))
}

fn required(o: &Value) -> BTreeSet<&str> {
    o.get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn properties(o: &Value) -> Map<String, Value> {
    o.get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// An object schema's dependencies: names a property requires, and schemas
/// the object must also match when a property is present.
#[derive(Default)]
struct Dependencies<'v> {
    names: BTreeMap<String, BTreeSet<&'v str>>,
    schemas: BTreeMap<String, &'v Value>,
}

fn dependencies_of(o: &Value) -> Dependencies<'_> {
    let mut d = Dependencies::default();
    for key in ["dependencies", "dependentRequired", "dependentSchemas"] {
        let Some(map) = o.get(key).and_then(Value::as_object) else {
            continue;
        };
        for (name, v) in map {
            match v {
                Value::Array(names) => {
                    let names = names.iter().filter_map(Value::as_str).collect();
                    d.names.insert(name.clone(), names);
                }
                _ => {
                    d.schemas.insert(name.clone(), v);
                }
            }
        }
    }
    d
}

fn has_default(v: &Value) -> bool {
    v.get("default").is_some()
}

impl Diff<'_> {
    fn objects(&mut self, path: &str, o: &Value, u: &Value, depth: usize) {
        use Change::*;
        let (op, up) = (properties(o), properties(u));
        let (or, ur) = (required(o), required(u));
        for (name, _) in op.iter().filter(|(n, _)| up.contains_key(*n)) {
            let at = format!("{path}/required/{name}");
            match (or.contains(name.as_str()), ur.contains(name.as_str())) {
                (true, false) => self.add(&at, RequiredAttributeRemoved),
                (false, true) if up.get(name).is_some_and(has_default) => {
                    self.add(&at, RequiredAttributeWithDefaultAdded)
                }
                (false, true) => self.add(&at, RequiredAttributeAdded),
                _ => {}
            }
        }
        let names: BTreeSet<&String> = op.keys().chain(up.keys()).collect();
        for name in names {
            let at = format!("{path}/properties/{name}");
            match (op.get(name), up.get(name)) {
                (Some(os), None) => {
                    if is_open(u) {
                        self.add(&at, PropertyRemovedFromOpenContentModel);
                    } else if let Some(partial) = additional_schema(u) {
                        let kind = if self.compatible(&at, os, partial, depth) {
                            PropertyRemovedIsCoveredByPartiallyOpenContentModel
                        } else {
                            PropertyRemovedNotCoveredByPartiallyOpenContentModel
                        };
                        self.add(&at, kind);
                    } else if *os == Value::Bool(false) {
                        self.add(&at, PropertyWithFalseRemovedFromClosedContentModel);
                    } else {
                        self.add(&at, PropertyRemovedFromClosedContentModel);
                    }
                }
                (None, Some(us)) => {
                    if is_open(o) {
                        if class_of(us) == Class::Empty {
                            self.add(&at, PropertyWithEmptySchemaAddedToOpenContentModel);
                        } else {
                            self.add(&at, PropertyAddedToOpenContentModel);
                        }
                        continue;
                    }
                    if let Some(partial) = additional_schema(o) {
                        let kind = if self.compatible(&at, partial, us, depth) {
                            PropertyAddedIsCoveredByPartiallyOpenContentModel
                        } else {
                            PropertyAddedNotCoveredByPartiallyOpenContentModel
                        };
                        self.add(&at, kind);
                    }
                    if !ur.contains(name.as_str()) {
                        self.add(&at, OptionalPropertyAddedToUnopenContentModel);
                    } else if has_default(us) {
                        self.add(&at, RequiredPropertyWithDefaultAddedToUnopenContentModel);
                    } else {
                        self.add(&at, RequiredPropertyAddedToUnopenContentModel);
                    }
                }
                (Some(os), Some(us)) => self.compare(&at, os, us, depth),
                (None, None) => {}
            }
        }
        let at = format!("{path}/additionalProperties");
        match (permits_additional(o), permits_additional(u)) {
            (false, true) => self.add(&at, AdditionalPropertiesAdded),
            (true, false) => self.add(&at, AdditionalPropertiesRemoved),
            _ => match (additional_schema(o), additional_schema(u)) {
                (None, Some(_)) => self.add(&at, AdditionalPropertiesNarrowed),
                (Some(_), None) => self.add(&at, AdditionalPropertiesExtended),
                (Some(a), Some(b)) => self.compare(&at, a, b, depth),
                (None, None) => {}
            },
        }
        self.dependencies(path, o, u, depth);
        let pair = |k: &str| (number(o, k), number(u, k));
        bound(
            self,
            &format!("{path}/maxProperties"),
            pair("maxProperties"),
            [
                MaxPropertiesAdded,
                MaxPropertiesRemoved,
                MaxPropertiesIncreased,
                MaxPropertiesDecreased,
            ],
        );
        bound(
            self,
            &format!("{path}/minProperties"),
            pair("minProperties"),
            [
                MinPropertiesAdded,
                MinPropertiesRemoved,
                MinPropertiesIncreased,
                MinPropertiesDecreased,
            ],
        );
    }

    /// Confluent's `compareDependencies`: property dependencies (a list of
    /// names) by set, schema dependencies by schema. `dependencies` holds
    /// both kinds (draft 7); `dependentRequired` and `dependentSchemas`
    /// are their later names.
    fn dependencies(&mut self, path: &str, o: &Value, u: &Value, depth: usize) {
        use Change::*;
        let (od, ud) = (dependencies_of(o), dependencies_of(u));
        let names: BTreeSet<&String> = od.names.keys().chain(ud.names.keys()).collect();
        for name in names {
            let at = format!("{path}/dependencies/{name}");
            match (od.names.get(name), ud.names.get(name)) {
                (Some(_), None) => self.add(&at, DependencyArrayRemoved),
                (None, Some(_)) => self.add(&at, DependencyArrayAdded),
                (Some(a), Some(b)) if a != b => {
                    let kind = if b.is_superset(a) {
                        DependencyArrayExtended
                    } else if a.is_superset(b) {
                        DependencyArrayNarrowed
                    } else {
                        DependencyArrayChanged
                    };
                    self.add(&at, kind);
                }
                _ => {}
            }
        }
        let names: BTreeSet<&String> = od.schemas.keys().chain(ud.schemas.keys()).collect();
        for name in names {
            let at = format!("{path}/dependencies/{name}");
            match (od.schemas.get(name), ud.schemas.get(name)) {
                (Some(_), None) => self.add(&at, DependencySchemaRemoved),
                (None, Some(_)) => self.add(&at, DependencySchemaAdded),
                (Some(a), Some(b)) => self.compare(&at, a, b, depth),
                (None, None) => {}
            }
        }
    }

    fn arrays(&mut self, path: &str, o: &Value, u: &Value, depth: usize) {
        use Change::*;
        let pair = |k: &str| (number(o, k), number(u, k));
        bound(
            self,
            &format!("{path}/maxItems"),
            pair("maxItems"),
            [
                MaxItemsAdded,
                MaxItemsRemoved,
                MaxItemsIncreased,
                MaxItemsDecreased,
            ],
        );
        bound(
            self,
            &format!("{path}/minItems"),
            pair("minItems"),
            [
                MinItemsAdded,
                MinItemsRemoved,
                MinItemsIncreased,
                MinItemsDecreased,
            ],
        );
        // Confluent compares `contains`' bounds, not its schema.
        bound(
            self,
            &format!("{path}/maxContains"),
            pair("maxContains"),
            [
                MaxContainsAdded,
                MaxContainsRemoved,
                MaxContainsIncreased,
                MaxContainsDecreased,
            ],
        );
        bound(
            self,
            &format!("{path}/minContains"),
            pair("minContains"),
            [
                MinContainsAdded,
                MinContainsRemoved,
                MinContainsIncreased,
                MinContainsDecreased,
            ],
        );
        let unique = |v: &Value| v.get("uniqueItems") == Some(&Value::Bool(true));
        match (unique(o), unique(u)) {
            (false, true) => self.add(&format!("{path}/uniqueItems"), UniqueItemsAdded),
            (true, false) => self.add(&format!("{path}/uniqueItems"), UniqueItemsRemoved),
            _ => {}
        }
        let at = format!("{path}/items");
        match (o.get("items"), u.get("items")) {
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                let open =
                    |v: &Value| matches!(v.get("additionalItems"), None | Some(Value::Bool(true)));
                let longest = a.len().max(b.len());
                for i in 0..longest {
                    let at = format!("{at}/{i}");
                    match (a.get(i), b.get(i)) {
                        (Some(x), Some(y)) => self.compare(&at, x, y, depth),
                        (Some(_), None) if open(u) => {
                            self.add(&at, ItemRemovedFromOpenContentModel)
                        }
                        (Some(_), None) => self.add(&at, ItemRemovedFromClosedContentModel),
                        (None, Some(y)) if open(o) => {
                            if class_of(y) == Class::Empty {
                                self.add(&at, ItemWithEmptySchemaAddedToOpenContentModel);
                            } else {
                                self.add(&at, ItemAddedToOpenContentModel);
                            }
                        }
                        (None, Some(_)) => self.add(&at, ItemAddedToClosedContentModel),
                        (None, None) => {}
                    }
                }
            }
            (Some(Value::Array(_)), Some(_)) | (Some(_), Some(Value::Array(_))) => {
                self.add(&at, TypeChanged)
            }
            (Some(a), Some(b)) => self.compare(&at, a, b, depth),
            (Some(a), None) => self.compare(&at, a, &Value::Bool(true), depth),
            (None, Some(b)) => self.compare(&at, &Value::Bool(true), b, depth),
            (None, None) => {}
        }
    }

    fn combined(
        &mut self,
        path: &str,
        (oc, osubs): (Criterion, &[Value]),
        (uc, usubs): (Criterion, &[Value]),
        depth: usize,
    ) {
        use Change::*;
        let singleton = |s: &[Value]| s.len() == 1;
        let criterion = if oc == uc {
            None
        } else if uc == Criterion::Any
            || (uc == Criterion::One && singleton(osubs))
            || (uc == Criterion::All && singleton(osubs) && singleton(usubs))
        {
            Some(CombinedTypeExtended)
        } else {
            Some(CombinedTypeChanged)
        };
        if let Some(c) = criterion {
            self.add(path, c);
            if c == CombinedTypeChanged {
                return;
            }
        }
        let dedup = |s: &[Value]| -> Vec<Value> {
            let mut seen = HashSet::new();
            s.iter()
                .filter(|v| seen.insert(sorted(v).to_string()))
                .cloned()
                .collect()
        };
        let (osubs, usubs) = (dedup(osubs), dedup(usubs));
        match osubs.len().cmp(&usubs.len()) {
            std::cmp::Ordering::Less if uc == Criterion::All => self.add(path, ProductTypeExtended),
            std::cmp::Ordering::Less => self.add(path, SumTypeExtended),
            std::cmp::Ordering::Greater if uc == Criterion::All => {
                self.add(path, ProductTypeNarrowed)
            }
            std::cmp::Ordering::Greater => self.add(path, SumTypeNarrowed),
            std::cmp::Ordering::Equal => {}
        }
        // Each original subschema must pair with a distinct update
        // subschema it is compatible with (a maximum bipartite matching,
        // by augmenting paths; the lists are short).
        let edges: Vec<Vec<usize>> = osubs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = format!("{path}/{i}");
                usubs
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| self.compatible(&at, a, b, depth))
                    .map(|(j, _)| j)
                    .collect()
            })
            .collect();
        let mut owner: Vec<Option<usize>> = vec![None; usubs.len()];
        let mut matched = 0usize;
        for i in 0..osubs.len() {
            let mut seen = vec![false; usubs.len()];
            if augment(i, &edges, &mut owner, &mut seen) {
                matched = matched.saturating_add(1);
            }
        }
        for (j, i) in owner.iter().enumerate() {
            if let (Some(i), Some(b)) = (i, usubs.get(j)) {
                if let Some(a) = osubs.get(*i) {
                    self.compare(&format!("{path}/{i}"), a, b, depth);
                }
            }
        }
        if matched < osubs.len().min(usubs.len()) {
            self.add(path, CombinedTypeSubschemasChanged);
        }
    }
}

fn augment(i: usize, edges: &[Vec<usize>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    for &j in edges.get(i).map_or(&[][..], Vec::as_slice) {
        if seen.get(j).copied().unwrap_or(true) {
            continue;
        }
        if let Some(s) = seen.get_mut(j) {
            *s = true;
        }
        let current = owner.get(j).copied().flatten();
        let free = match current {
            None => true,
            Some(k) => augment(k, edges, owner, seen),
        };
        if free {
            if let Some(o) = owner.get_mut(j) {
                *o = Some(i);
            }
            return true;
        }
    }
    false
}

/// Every difference from `original` to `update`.
pub fn differences(original: &JsonSchema, update: &JsonSchema) -> Vec<(String, Change)> {
    let mut diff = Diff {
        original,
        update,
        changes: Vec::new(),
        visited: HashSet::new(),
    };
    diff.compare("#", &original.root, &update.root, 0);
    diff.changes
}

/// The reasons `new` and `old` are incompatible in `direction`.
pub fn check(new: &JsonSchema, old: &JsonSchema, direction: Direction) -> Vec<String> {
    crate::compat::directional_reasons(new, old, direction, differences, Change::compatible)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_schema::parse;
    use crate::schema::NamedReference;
    use Change::*;

    fn js(text: &str) -> JsonSchema {
        parse(text, &[]).unwrap_or_else(|e| panic!("{}: {text}", e.0))
    }

    fn all(old: &str, new: &str) -> Vec<Change> {
        differences(&js(old), &js(new))
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    fn breaks(old: &str, new: &str) -> Vec<Change> {
        all(old, new)
            .into_iter()
            .filter(|c| !c.compatible())
            .collect()
    }

    fn obj(props: &str, extra: &str) -> String {
        format!(r#"{{"type":"object","properties":{{{props}}}{extra}}}"#)
    }

    const A: &str = r#""a":{"type":"string"}"#;
    const B: &str = r#""b":{"type":"integer"}"#;

    fn with_ab(extra: &str) -> String {
        obj(&format!("{A},{B}"), extra)
    }

    #[test]
    fn dependency_arrays_may_narrow_or_go_not_grow_appear_or_change() {
        use Change::*;
        let none = with_ab("");
        let ab = with_ab(r#","dependencies":{"a":["b"]}"#);
        let abc = with_ab(r#","dependencies":{"a":["b","c"]}"#);
        let ac = with_ab(r#","dependencies":{"a":["c"]}"#);
        assert_eq!(all(&none, &ab), vec![DependencyArrayAdded]);
        assert_eq!(all(&ab, &none), vec![DependencyArrayRemoved]);
        assert_eq!(all(&ab, &abc), vec![DependencyArrayExtended]);
        assert_eq!(all(&abc, &ab), vec![DependencyArrayNarrowed]);
        assert_eq!(all(&ab, &ac), vec![DependencyArrayChanged]);
        assert!(breaks(&abc, &ab).is_empty() && breaks(&ab, &none).is_empty());
        for incompatible in [breaks(&none, &ab), breaks(&ab, &abc), breaks(&ab, &ac)] {
            assert_eq!(incompatible.len(), 1, "{incompatible:?}");
        }
        // The later keyword is the same rule.
        let later = with_ab(r#","dependentRequired":{"a":["b","c"]}"#);
        assert_eq!(all(&ab, &later), vec![DependencyArrayExtended]);
    }

    #[test]
    fn dependency_schemas_may_go_not_appear_and_are_compared_inside() {
        use Change::*;
        let none = with_ab("");
        let s1 = with_ab(r#","dependencies":{"a":{"properties":{"b":{"maximum":5}}}}"#);
        let s2 = with_ab(r#","dependentSchemas":{"a":{"properties":{"b":{"maximum":3}}}}"#);
        assert_eq!(all(&none, &s1), vec![DependencySchemaAdded]);
        assert_eq!(all(&s1, &none), vec![DependencySchemaRemoved]);
        assert!(breaks(&s1, &none).is_empty());
        assert_eq!(breaks(&none, &s1), vec![DependencySchemaAdded]);
        assert_eq!(breaks(&s1, &s2), vec![MaximumDecreased]);
        assert!(breaks(&s2, &s1).is_empty());
    }

    #[test]
    fn contains_bounds_may_loosen_not_tighten_and_its_schema_is_not_compared() {
        use Change::*;
        let arr =
            |extra: &str| format!(r#"{{"type":"array","contains":{{"type":"string"}}{extra}}}"#);
        let plain = arr("");
        let bounded = arr(r#","minContains":2,"maxContains":5"#);
        assert_eq!(
            all(&plain, &bounded),
            vec![MaxContainsAdded, MinContainsAdded]
        );
        assert!(breaks(&bounded, &plain).is_empty());
        assert_eq!(
            all(&bounded, &plain),
            vec![MaxContainsRemoved, MinContainsRemoved]
        );
        let looser = arr(r#","minContains":1,"maxContains":9"#);
        assert_eq!(
            all(&bounded, &looser),
            vec![MaxContainsIncreased, MinContainsDecreased]
        );
        assert!(breaks(&bounded, &looser).is_empty());
        assert_eq!(
            breaks(&looser, &bounded),
            vec![MaxContainsDecreased, MinContainsIncreased]
        );
        let other = r#"{"type":"array","contains":{"type":"integer"}}"#;
        assert!(all(&plain, other).is_empty());
        // `contains` alone makes an array schema.
        assert_eq!(
            breaks(r#"{"contains":{"type":"string"}}"#, r#"{"type":"string"}"#),
            vec![TypeChanged]
        );
    }

    #[test]
    fn conditionals_are_an_all_of_with_the_rest_and_not_compared_inside() {
        use Change::*;
        let cond = |then_max: u32| {
            format!(
                r#"{{"if":{{"properties":{{"a":{{"const":"x"}}}}}},"then":{{"properties":{{"b":{{"maximum":{then_max}}}}}}}}}"#
            )
        };
        // Confluent compares nothing inside `if`/`then`/`else`.
        assert!(all(&cond(5), &cond(3)).is_empty());
        assert_eq!(breaks(&cond(5), r#"{"type":"string"}"#), vec![TypeChanged]);
        // With other keywords, the schema is the allOf of both parts, so an
        // object schema gaining a conditional changes type.
        let plain = with_ab("");
        let conditional = with_ab(r#","if":{"required":["a"]},"then":{"required":["b"]}"#);
        assert_eq!(breaks(&plain, &conditional), vec![TypeChanged]);
        assert_eq!(breaks(&conditional, &plain), vec![TypeChanged]);
        let other_then = with_ab(r#","if":{"required":["a"]},"then":{"required":[]}"#);
        assert!(breaks(&conditional, &other_then).is_empty());
        let grown = obj(
            &format!("{A},{B}"),
            r#","if":{"required":["a"]},"then":{"required":["b"]},"additionalProperties":false"#,
        );
        // The object parts are matched as allOf subschemas are.
        let b = breaks(&conditional, &grown);
        assert_eq!(
            b,
            vec![CombinedTypeSubschemasChanged],
            "{:?}",
            all(&conditional, &grown)
        );
    }

    #[test]
    fn malformed_schemas_are_refused_with_a_reason() {
        for bad in [
            "",
            "{",
            "42",
            r#"{"type":"strng"}"#,
            r#"{"type":"object","properties":[]}"#,
            r#"{"required":"a"}"#,
            r#"{"anyOf":[]}"#,
            r#"{"maxLength":-1}"#,
            r#"{"multipleOf":0}"#,
            r##"{"$ref":"#/definitions/nope"}"##,
            r#"{"$ref":"other.json"}"#,
            r#"{"properties":{"a":7}}"#,
        ] {
            let e = parse(bad, &[])
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(!e.0.is_empty());
        }
        assert!(parse("true", &[]).is_ok());
    }

    #[test]
    fn refs_resolve_locally_and_into_references() {
        let other = NamedReference {
            name: "other.json".into(),
            schema: r#"{"definitions":{"X":{"type":"string"}}}"#.into(),
        };
        let text = r##"{"properties":{"x":{"$ref":"other.json#/definitions/X"},
                        "y":{"$ref":"#/definitions/Y"}},
                        "definitions":{"Y":{"type":"integer"}}}"##;
        assert!(parse(text, &[]).is_err());
        let s = parse(text, std::slice::from_ref(&other)).unwrap();
        // Changing what a ref points at is seen through the ref.
        let changed = text.replace(r#""Y":{"type":"integer"}"#, r#""Y":{"type":"string"}"#);
        let t = parse(&changed, std::slice::from_ref(&other)).unwrap();
        let d: Vec<Change> = differences(&s, &t).into_iter().map(|(_, c)| c).collect();
        assert_eq!(d, vec![TypeChanged]);
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let a = js(r#"{ "type": "object", "properties": { "b": {"type":"string"}, "a": {} } }"#);
        let b = js(r#"{"properties":{"a":{},"b":{"type":"string"}},"type":"object"}"#);
        assert_eq!(a.canonical(), b.canonical());
        assert!(!a.canonical().contains(' '));
    }

    #[test]
    fn open_content_model_allows_removing_not_adding_properties() {
        let v1 = obj(&format!("{A},{B}"), "");
        let v2 = obj(A, "");
        assert_eq!(all(&v1, &v2), vec![PropertyRemovedFromOpenContentModel]);
        assert_eq!(breaks(&v2, &v1), vec![PropertyAddedToOpenContentModel]);
        let empty = obj(&format!(r#"{A},"c":{{}}"#), "");
        assert_eq!(
            all(&v2, &empty),
            vec![PropertyWithEmptySchemaAddedToOpenContentModel]
        );
    }

    #[test]
    fn closed_content_model_allows_adding_optional_properties_not_removing() {
        let closed = r#","additionalProperties":false"#;
        let v1 = obj(A, closed);
        let v2 = obj(&format!("{A},{B}"), closed);
        assert_eq!(
            all(&v1, &v2),
            vec![OptionalPropertyAddedToUnopenContentModel]
        );
        assert_eq!(
            breaks(&v2, &v1),
            vec![PropertyRemovedFromClosedContentModel]
        );
        let required = obj(
            &format!("{A},{B}"),
            &format!(r#"{closed},"required":["b"]"#),
        );
        assert_eq!(
            breaks(&v1, &required),
            vec![RequiredPropertyAddedToUnopenContentModel]
        );
        let with_default = obj(
            &format!(r#"{A},"b":{{"type":"integer","default":0}}"#),
            &format!(r#"{closed},"required":["b"]"#),
        );
        assert!(breaks(&v1, &with_default).is_empty());
        let false_prop = obj(&format!(r#"{A},"b":false"#), closed);
        assert_eq!(
            all(&false_prop, &v1),
            vec![PropertyWithFalseRemovedFromClosedContentModel]
        );
    }

    #[test]
    fn partially_open_content_model_checks_against_the_additional_schema() {
        let partial = r#","additionalProperties":{"type":"integer"}"#;
        let v1 = obj(A, partial);
        let with_b = obj(&format!("{A},{B}"), partial);
        assert!(breaks(&v1, &with_b).is_empty(), "{:?}", all(&v1, &with_b));
        let with_s = obj(&format!(r#"{A},"s":{{"type":"string"}}"#), partial);
        assert!(breaks(&v1, &with_s).contains(&PropertyAddedNotCoveredByPartiallyOpenContentModel));
        assert!(breaks(&with_b, &v1).is_empty());
        assert!(
            breaks(&with_s, &v1).contains(&PropertyRemovedNotCoveredByPartiallyOpenContentModel)
        );
    }

    #[test]
    fn required_may_be_dropped_or_added_with_a_default() {
        let v1 = obj(&format!("{A},{B}"), r#","required":["a"]"#);
        let v2 = obj(&format!("{A},{B}"), "");
        assert_eq!(all(&v1, &v2), vec![RequiredAttributeRemoved]);
        assert_eq!(breaks(&v2, &v1), vec![RequiredAttributeAdded]);
        let v3 = obj(
            &format!(r#""a":{{"type":"string","default":"x"}},{B}"#),
            r#","required":["a"]"#,
        );
        assert!(breaks(&v2, &v3).is_empty(), "{:?}", all(&v2, &v3));
    }

    #[test]
    fn additional_properties_may_open_not_close() {
        let open = obj(A, "");
        let closed = obj(A, r#","additionalProperties":false"#);
        assert_eq!(all(&closed, &open), vec![AdditionalPropertiesAdded]);
        assert_eq!(breaks(&open, &closed), vec![AdditionalPropertiesRemoved]);
    }

    #[test]
    fn string_bounds_may_loosen_not_tighten() {
        let s = |extra: &str| format!(r#"{{"type":"string"{extra}}}"#);
        assert_eq!(
            breaks(&s(""), &s(r#","maxLength":5"#)),
            vec![MaxLengthAdded]
        );
        assert!(breaks(&s(r#","maxLength":5"#), &s(r#","maxLength":9"#)).is_empty());
        assert_eq!(
            breaks(&s(r#","maxLength":9"#), &s(r#","maxLength":5"#)),
            vec![MaxLengthDecreased]
        );
        assert_eq!(
            breaks(&s(r#","minLength":1"#), &s(r#","minLength":2"#)),
            vec![MinLengthIncreased]
        );
        assert!(breaks(&s(r#","minLength":2"#), &s("")).is_empty());
        assert_eq!(breaks(&s(""), &s(r#","pattern":"^a""#)), vec![PatternAdded]);
        assert_eq!(
            breaks(&s(r#","pattern":"^a""#), &s(r#","pattern":"^b""#)),
            vec![PatternChanged]
        );
        assert!(breaks(&s(r#","pattern":"^a""#), &s("")).is_empty());
    }

    #[test]
    fn number_bounds_and_integer_to_number() {
        let n = |t: &str, extra: &str| format!(r#"{{"type":"{t}"{extra}}}"#);
        assert!(breaks(&n("integer", ""), &n("number", "")).is_empty());
        assert_eq!(
            breaks(&n("number", ""), &n("integer", "")),
            vec![TypeNarrowed]
        );
        assert_eq!(
            breaks(&n("number", ""), &n("number", r#","maximum":5"#)),
            vec![MaximumAdded]
        );
        assert!(breaks(
            &n("number", r#","maximum":5"#),
            &n("number", r#","maximum":7"#)
        )
        .is_empty());
        assert_eq!(
            breaks(
                &n("number", r#","minimum":5"#),
                &n("number", r#","minimum":7"#)
            ),
            vec![MinimumIncreased]
        );
        assert!(breaks(
            &n("number", r#","multipleOf":4"#),
            &n("number", r#","multipleOf":2"#)
        )
        .is_empty());
        assert_eq!(
            breaks(
                &n("number", r#","multipleOf":2"#),
                &n("number", r#","multipleOf":4"#)
            ),
            vec![MultipleOfExpanded]
        );
        assert_eq!(
            breaks(
                &n("number", r#","exclusiveMaximum":5"#),
                &n("number", r#","exclusiveMaximum":3"#)
            ),
            vec![ExclusiveMaximumDecreased]
        );
    }

    #[test]
    fn type_changes_and_unions() {
        assert_eq!(
            breaks(r#"{"type":"string"}"#, r#"{"type":"integer"}"#),
            vec![TypeChanged]
        );
        // Widening to a union that contains the old type.
        let union = r#"{"type":["string","null"]}"#;
        assert!(
            breaks(r#"{"type":"string"}"#, union).is_empty(),
            "{:?}",
            all(r#"{"type":"string"}"#, union)
        );
        assert_eq!(breaks(union, r#"{"type":"string"}"#), vec![TypeChanged]);
        let any2 = r#"{"anyOf":[{"type":"string"},{"type":"integer"}]}"#;
        let any3 = r#"{"anyOf":[{"type":"string"},{"type":"integer"},{"type":"boolean"}]}"#;
        assert_eq!(all(any2, any3), vec![SumTypeExtended]);
        assert_eq!(breaks(any3, any2), vec![SumTypeNarrowed]);
        let one2 = r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#;
        assert_eq!(all(one2, any2), vec![CombinedTypeExtended]);
        assert_eq!(breaks(any2, one2), vec![CombinedTypeChanged]);
        let swapped = r#"{"anyOf":[{"type":"string"},{"type":"boolean"}]}"#;
        assert_eq!(breaks(any2, swapped), vec![CombinedTypeSubschemasChanged]);
        // Anything may become the empty schema; nothing may leave `false`
        // incompatibly.
        assert!(breaks(r#"{"type":"string"}"#, "{}").is_empty());
        assert!(breaks("false", r#"{"type":"string"}"#).is_empty());
    }

    #[test]
    fn enums_may_grow_not_shrink() {
        let e = |vals: &str| format!(r#"{{"enum":[{vals}]}}"#);
        assert_eq!(
            all(&e(r#""a","b""#), &e(r#""a","b","c""#)),
            vec![EnumArrayExtended]
        );
        assert_eq!(
            breaks(&e(r#""a","b""#), &e(r#""a""#)),
            vec![EnumArrayNarrowed]
        );
        assert_eq!(
            breaks(&e(r#""a","b""#), &e(r#""a","c""#)),
            vec![EnumArrayChanged]
        );
    }

    #[test]
    fn arrays_items_and_bounds() {
        let a = |items: &str, extra: &str| format!(r#"{{"type":"array","items":{items}{extra}}}"#);
        assert_eq!(
            breaks(
                &a(r#"{"type":"string"}"#, ""),
                &a(r#"{"type":"integer"}"#, "")
            ),
            vec![TypeChanged]
        );
        assert_eq!(
            breaks(&a("{}", r#","maxItems":9"#), &a("{}", r#","maxItems":3"#)),
            vec![MaxItemsDecreased]
        );
        assert_eq!(
            breaks(&a("{}", ""), &a("{}", r#","uniqueItems":true"#)),
            vec![UniqueItemsAdded]
        );
        let tuple =
            |items: &str, extra: &str| format!(r#"{{"type":"array","items":[{items}]{extra}}}"#);
        let s = r#"{"type":"string"}"#;
        assert_eq!(
            breaks(&tuple(s, ""), &tuple(&format!("{s},{s}"), "")),
            vec![ItemAddedToOpenContentModel]
        );
        assert!(breaks(&tuple(&format!("{s},{s}"), ""), &tuple(s, "")).is_empty());
        let closed = r#","additionalItems":false"#;
        assert!(breaks(&tuple(s, closed), &tuple(&format!("{s},{s}"), closed)).is_empty());
        assert_eq!(
            breaks(&tuple(&format!("{s},{s}"), closed), &tuple(s, closed)),
            vec![ItemRemovedFromClosedContentModel]
        );
    }

    #[test]
    fn not_reverses_the_direction() {
        let not = |t: &str| format!(r#"{{"not":{t}}}"#);
        let s = r#"{"type":"string"}"#;
        let su = r#"{"type":["string","integer"]}"#;
        assert_eq!(breaks(&not(s), &not(su)), vec![NotTypeExtended]);
        assert_eq!(all(&not(su), &not(s)), vec![NotTypeNarrowed]);
    }

    #[test]
    fn recursive_refs_terminate_and_direction_is_reported() {
        let rec = r##"{"type":"object","properties":{"next":{"$ref":"#"},"v":{"type":"string"}}}"##;
        assert!(all(rec, rec).is_empty());
        let old = js(&obj(A, ""));
        let new = js(&obj(&format!("{A},{B}"), ""));
        assert!(!check(&new, &old, Direction::Backward).is_empty());
        assert!(check(&new, &old, Direction::Forward).is_empty());
        assert!(!check(&new, &old, Direction::Both).is_empty());
    }
}
