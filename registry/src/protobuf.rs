//! Protobuf schemas: parsing with protox (from `.proto` text, or from the
//! base64 `FileDescriptorProto` that confluent-kafka's Python serializer
//! sends), the canonical form, and Confluent's compatibility rules.
//!
//! A schema's references are its imports: each reference's name is the
//! path the schema imports it by, its text that subject version's schema.
//! Google's well-known types (`google/protobuf/*.proto`) resolve without a
//! reference, as they do for Confluent.
//!
//! Compatibility follows Confluent's `io.confluent.kafka.schemaregistry.
//! protobuf.diff`: the two files are compared and every difference is
//! classified (`Change`); a check fails when any difference is not one of
//! the compatible kinds. Confluent's rules are symmetric in the kinds they
//! allow (adding and removing fields are both allowed), so BACKWARD
//! compares old to new and FORWARD new to old with the same table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::Engine as _;
use prost_reflect::prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor, Syntax,
};
use protox::file::{File, FileResolver, GoogleFileResolver};

use crate::compat::Direction;
use crate::schema::{InvalidSchema, NamedReference};

/// The name the schema being parsed gets in the descriptor pool: never a
/// path a schema imports.
const MAIN_FILE: &str = "<strom-registry-schema>.proto";

/// A parsed Protobuf schema: its file and everything it imports.
pub struct ProtoSchema {
    file: FileDescriptor,
}

/// `.proto` text, or a base64 `FileDescriptorProto` (Confluent accepts
/// both; confluent-kafka's Python client sends the second).
fn open(name: &str, text: &str) -> Result<File, protox::Error> {
    let trimmed = text.trim();
    let looks_base64 = !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64 {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed) {
            if let Ok(mut proto) =
                prost_reflect::prost_types::FileDescriptorProto::decode(bytes.as_slice())
            {
                proto.name = Some(name.to_string());
                return Ok(File::from_file_descriptor_proto(proto));
            }
        }
    }
    File::from_source(name, text)
}

/// The schema under `MAIN_FILE`, its references by name, then Google's
/// well-known types.
struct Resolver {
    main: String,
    references: HashMap<String, String>,
    google: GoogleFileResolver,
}

impl FileResolver for Resolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == MAIN_FILE {
            return open(name, &self.main);
        }
        match self.references.get(name) {
            Some(text) => open(name, text),
            None => self.google.open_file(name),
        }
    }
}

/// Parses `text` with the schemas it imports (`references`, by import path).
pub fn parse(text: &str, references: &[NamedReference]) -> Result<ProtoSchema, InvalidSchema> {
    let resolver = Resolver {
        main: text.to_string(),
        references: references
            .iter()
            .map(|r| (r.name.clone(), r.schema.clone()))
            .collect(),
        google: GoogleFileResolver::new(),
    };
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(MAIN_FILE)?;
        Ok::<DescriptorPool, protox::Error>(compiler.descriptor_pool())
    }))
    .map_err(|_| InvalidSchema("parsing failed on this schema".into()))?;
    let pool = compiled.map_err(|e| InvalidSchema(format!("Invalid schema: {e}")))?;
    let file = pool
        .get_file_by_name(MAIN_FILE)
        .ok_or_else(|| InvalidSchema("the schema's file is missing after parsing".into()))?;
    // Records name their message by index in the file: a file without
    // one has nothing to serialize (Confluent refuses it too).
    if file.messages().len() == 0 {
        return Err(InvalidSchema(
            "Invalid schema: a Protobuf schema must define at least one message".into(),
        ));
    }
    Ok(ProtoSchema { file })
}

impl ProtoSchema {
    /// The schema as a base64 `FileDescriptorProto` without source
    /// positions: type names fully qualified, whitespace and comments gone,
    /// so `.proto` text and the descriptor of the same schema normalize to
    /// the same text (and id). It is also `format=serialized`.
    pub fn serialized(&self) -> String {
        let mut proto = self.file.file_descriptor_proto().clone();
        proto.source_code_info = None;
        proto.name = None;
        base64::engine::general_purpose::STANDARD.encode(proto.encode_to_vec())
    }
}

/// One kind of difference between two Protobuf schemas, as Confluent's
/// `Difference.Type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    PackageChanged,
    MessageAdded,
    MessageRemoved,
    /// A message's position among its siblings changed: compatible, since
    /// the message indexes in a record refer to the writer's schema.
    MessageMoved,
    EnumAdded,
    EnumRemoved,
    EnumConstAdded,
    EnumConstChanged,
    EnumConstRemoved,
    FieldAdded,
    FieldRemoved,
    FieldNameChanged,
    /// Scalar (enums included), message and map are different kinds.
    FieldKindChanged,
    /// Scalars of different wire groups (see `scalar_group`).
    FieldScalarKindChanged,
    /// A message field's type has another name, or a same-named type
    /// changed incompatibly.
    FieldNamedTypeChanged,
    /// A number (enums included) changed label (`label`): the encodings of
    /// a packed repeated field and of a single value differ.
    FieldNumericLabelChanged,
    /// A string or bytes field changed label: compatible, as a single
    /// value and one element of a repeated field encode alike.
    FieldStringOrBytesLabelChanged,
    RequiredFieldAdded,
    RequiredFieldRemoved,
    OneofAdded,
    OneofRemoved,
    OneofFieldAdded,
    OneofFieldRemoved,
    /// A field left its oneof for the message's top level.
    OneofFieldMovedToTopLevel,
    MultipleFieldsMovedToOneof,
    FieldMovedToExistingOneof,
}

impl Change {
    /// Confluent's `SchemaDiff.COMPATIBLE_CHANGES`.
    pub fn compatible(self) -> bool {
        use Change::*;
        matches!(
            self,
            MessageAdded
                | MessageMoved
                | EnumAdded
                | EnumRemoved
                | EnumConstAdded
                | EnumConstChanged
                | EnumConstRemoved
                | FieldAdded
                | FieldRemoved
                | FieldNameChanged
                | FieldStringOrBytesLabelChanged
                | OneofAdded
                | OneofRemoved
                | OneofFieldAdded
                | OneofFieldMovedToTopLevel
        )
    }
}

/// The differences found so far, each with the path where it was found.
#[derive(Default)]
struct Diff {
    changes: Vec<(String, Change)>,
    /// Messages of the original already compared (types may recurse).
    visited: HashSet<String>,
}

impl Diff {
    fn add(&mut self, path: &str, change: Change) {
        self.changes.push((path.to_string(), change));
    }

    fn incompatible_since(&self, mark: usize) -> bool {
        crate::compat::incompatible_since(&self.changes, mark, Change::compatible)
    }
}

/// Every difference from `original` to `update`.
pub fn differences(original: &ProtoSchema, update: &ProtoSchema) -> Vec<(String, Change)> {
    let mut diff = Diff::default();
    if original.file.package_name() != update.file.package_name() {
        diff.add("#/", Change::PackageChanged);
    }
    compare_types(
        &mut diff,
        "#",
        original.file.messages().collect(),
        original.file.enums().collect(),
        update.file.messages().collect(),
        update.file.enums().collect(),
    );
    diff.changes
}

fn compare_types(
    diff: &mut Diff,
    path: &str,
    original_messages: Vec<MessageDescriptor>,
    original_enums: Vec<EnumDescriptor>,
    update_messages: Vec<MessageDescriptor>,
    update_enums: Vec<EnumDescriptor>,
) {
    // Map entries are the map fields' own business (Confluent's parser
    // does not see them as messages).
    let by_name = |ms: Vec<MessageDescriptor>| -> BTreeMap<String, (usize, MessageDescriptor)> {
        ms.into_iter()
            .filter(|m| !m.is_map_entry())
            .enumerate()
            .map(|(i, m)| (m.name().to_string(), (i, m)))
            .collect()
    };
    let original = by_name(original_messages);
    let update = by_name(update_messages);
    let names: BTreeSet<&String> = original.keys().chain(update.keys()).collect();
    for name in names {
        let at = format!("{path}/{name}");
        match (original.get(name), update.get(name)) {
            (Some(_), None) => diff.add(&at, Change::MessageRemoved),
            (None, Some(_)) => diff.add(&at, Change::MessageAdded),
            (Some((oi, o)), Some((ui, u))) => {
                compare_messages(diff, &at, o, u);
                if oi != ui {
                    diff.add(&at, Change::MessageMoved);
                }
            }
            (None, None) => {}
        }
    }
    let by_name = |es: Vec<EnumDescriptor>| -> BTreeMap<String, EnumDescriptor> {
        es.into_iter().map(|e| (e.name().to_string(), e)).collect()
    };
    let original = by_name(original_enums);
    let update = by_name(update_enums);
    let names: BTreeSet<&String> = original.keys().chain(update.keys()).collect();
    for name in names {
        let at = format!("{path}/{name}");
        match (original.get(name), update.get(name)) {
            (Some(_), None) => diff.add(&at, Change::EnumRemoved),
            (None, Some(_)) => diff.add(&at, Change::EnumAdded),
            (Some(o), Some(u)) => compare_enums(diff, &at, o, u),
            (None, None) => {}
        }
    }
}

fn compare_enums(diff: &mut Diff, path: &str, original: &EnumDescriptor, update: &EnumDescriptor) {
    let by_number = |e: &EnumDescriptor| -> BTreeMap<i32, String> {
        e.values()
            .map(|v| (v.number(), v.name().to_string()))
            .collect()
    };
    let (o, u) = (by_number(original), by_number(update));
    let numbers: BTreeSet<&i32> = o.keys().chain(u.keys()).collect();
    for n in numbers {
        let at = format!("{path}/{n}");
        match (o.get(n), u.get(n)) {
            (Some(_), None) => diff.add(&at, Change::EnumConstRemoved),
            (None, Some(_)) => diff.add(&at, Change::EnumConstAdded),
            (Some(a), Some(b)) if a != b => diff.add(&at, Change::EnumConstChanged),
            _ => {}
        }
    }
}

/// The oneof a field is in, if it is a real one (proto3 `optional` makes
/// a synthetic oneof, which Confluent's parser sees as a plain field).
fn real_oneof(f: &FieldDescriptor) -> Option<String> {
    f.containing_oneof()
        .filter(|o| !o.is_synthetic())
        .map(|o| o.name().to_string())
}

fn compare_messages(
    diff: &mut Diff,
    path: &str,
    original: &MessageDescriptor,
    update: &MessageDescriptor,
) {
    if !diff.visited.insert(original.full_name().to_string()) {
        return;
    }
    let all = |m: &MessageDescriptor| -> BTreeMap<u32, FieldDescriptor> {
        m.fields().map(|f| (f.number(), f)).collect()
    };
    let (original_all, update_all) = (all(original), all(update));
    // Plain fields (in no real oneof) by number, and each oneof's fields.
    let plain = |fields: &BTreeMap<u32, FieldDescriptor>| -> BTreeMap<u32, FieldDescriptor> {
        fields
            .iter()
            .filter(|(_, f)| real_oneof(f).is_none())
            .map(|(n, f)| (*n, f.clone()))
            .collect()
    };
    let mut original_plain = plain(&original_all);
    let update_plain = plain(&update_all);
    let oneofs = |m: &MessageDescriptor| -> BTreeMap<String, BTreeMap<u32, FieldDescriptor>> {
        m.oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| {
                (
                    o.name().to_string(),
                    o.fields().map(|f| (f.number(), f)).collect(),
                )
            })
            .collect()
    };
    let (original_oneofs, update_oneofs) = (oneofs(original), oneofs(update));
    let in_original_oneof: HashSet<u32> = original_oneofs
        .values()
        .flat_map(|fs| fs.keys().copied())
        .collect();

    // A oneof of the update may take in at most one plain field of the
    // original, and then no field of an original oneof.
    for (name, fields) in &update_oneofs {
        let at = format!("{path}/{name}");
        let mut moved = 0usize;
        let mut existing = 0usize;
        for n in fields.keys() {
            if original_plain.remove(n).is_some() {
                moved = moved.saturating_add(1);
            } else if in_original_oneof.contains(n) {
                existing = existing.saturating_add(1);
            }
        }
        if moved > 1 {
            diff.add(&at, Change::MultipleFieldsMovedToOneof);
        } else if moved == 1 && existing > 0 {
            diff.add(&at, Change::FieldMovedToExistingOneof);
        }
    }

    let names: BTreeSet<&String> = original_oneofs.keys().chain(update_oneofs.keys()).collect();
    for name in names {
        let at = format!("{path}/{name}");
        match (original_oneofs.get(name), update_oneofs.get(name)) {
            (Some(_), None) => diff.add(&at, Change::OneofRemoved),
            (None, Some(_)) => diff.add(&at, Change::OneofAdded),
            (Some(o), Some(u)) => {
                let numbers: BTreeSet<&u32> = o.keys().chain(u.keys()).collect();
                for n in numbers {
                    let at = format!("{at}/{n}");
                    match (o.get(n), u.get(n)) {
                        // Moved out of the oneof, not removed: compared below.
                        (Some(_), None) if update_all.contains_key(n) => {}
                        (Some(_), None) => diff.add(&at, Change::OneofFieldRemoved),
                        (None, Some(_)) => diff.add(&at, Change::OneofFieldAdded),
                        (Some(a), Some(b)) => compare_fields(diff, &at, a, b),
                        (None, None) => {}
                    }
                }
            }
            (None, None) => {}
        }
    }

    let numbers: BTreeSet<u32> = original_plain
        .keys()
        .chain(update_plain.keys())
        .copied()
        .collect();
    for n in numbers {
        let at = format!("{path}/{n}");
        match (original_plain.get(&n), update_plain.get(&n)) {
            (Some(o), None) if o.cardinality() == Cardinality::Required => {
                diff.add(&at, Change::RequiredFieldRemoved)
            }
            (Some(_), None) => diff.add(&at, Change::FieldRemoved),
            // Moved out of a oneof, not added: compared below.
            (None, Some(_)) if original_all.contains_key(&n) => {}
            (None, Some(u)) if u.cardinality() == Cardinality::Required => {
                diff.add(&at, Change::RequiredFieldAdded)
            }
            (None, Some(_)) => diff.add(&at, Change::FieldAdded),
            (Some(o), Some(u)) => compare_fields(diff, &at, o, u),
            (None, None) => {}
        }
    }

    // Fields whose oneof membership changed are compared by number too.
    for (n, o) in &original_all {
        let Some(u) = update_all.get(n) else {
            continue;
        };
        let (a, b) = (real_oneof(o), real_oneof(u));
        let same_place = (a.is_none() && b.is_none()) || (a.is_some() && a == b);
        if !same_place {
            let at = format!("{path}/{n}");
            if a.is_some() && b.is_none() {
                diff.add(&at, Change::OneofFieldMovedToTopLevel);
            }
            compare_fields(diff, &at, o, u);
        }
    }

    compare_types(
        diff,
        path,
        original.child_messages().collect(),
        original.child_enums().collect(),
        update.child_messages().collect(),
        update.child_enums().collect(),
    );
}

fn compare_fields(
    diff: &mut Diff,
    path: &str,
    original: &FieldDescriptor,
    update: &FieldDescriptor,
) {
    if original.name() != update.name() {
        diff.add(path, Change::FieldNameChanged);
    }
    let labels = (label(original), label(update));
    compare_field_types(diff, path, original, update, Some(labels));
}

/// A field's label as Confluent's parser reads it (`ProtobufSchema.label`,
/// Wire's `Field.Label`): none in a oneof or for a proto3 field written
/// without one, `Optional` for proto3 `optional`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Optional,
    Required,
    Repeated,
}

fn label(f: &FieldDescriptor) -> Option<Label> {
    if real_oneof(f).is_some() {
        return None;
    }
    if f.field_descriptor_proto().proto3_optional() {
        return Some(Label::Optional);
    }
    let proto3 = f.parent_file().syntax() == Syntax::Proto3;
    match f.cardinality() {
        Cardinality::Repeated => Some(Label::Repeated),
        _ if proto3 => None,
        Cardinality::Required => Some(Label::Required),
        Cardinality::Optional => Some(Label::Optional),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FieldKind {
    Scalar,
    Message,
    Map,
}

fn field_kind(f: &FieldDescriptor) -> FieldKind {
    if f.is_map() {
        FieldKind::Map
    } else if matches!(f.kind(), Kind::Message(_)) {
        FieldKind::Message
    } else {
        FieldKind::Scalar
    }
}

/// `scalar_group` of strings and bytes.
const STRING_OR_BYTES: u8 = 2;

/// Scalars whose encodings read as each other, as Confluent groups them
/// (after Protobuf's "updating a message type" rules); enums are numbers.
fn scalar_group(kind: &Kind) -> u8 {
    match kind {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::String | Kind::Bytes => STRING_OR_BYTES,
        Kind::Fixed32 | Kind::Sfixed32 => 3,
        Kind::Fixed64 | Kind::Sfixed64 => 4,
        Kind::Float => 5,
        Kind::Double => 6,
        Kind::Message(_) => 7,
    }
}

/// A message's name inside its package.
fn local_name(m: &MessageDescriptor) -> String {
    let full = m.full_name();
    let package = m.package_name();
    if package.is_empty() {
        return full.to_string();
    }
    full.strip_prefix(package)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or(full)
        .to_string()
}

fn compare_field_types(
    diff: &mut Diff,
    path: &str,
    original: &FieldDescriptor,
    update: &FieldDescriptor,
    labels: Option<(Option<Label>, Option<Label>)>,
) {
    let (ok, uk) = (field_kind(original), field_kind(update));
    if ok != uk {
        diff.add(path, Change::FieldKindChanged);
        return;
    }
    match (ok, original.kind(), update.kind()) {
        (FieldKind::Scalar, a, b) if scalar_group(&a) != scalar_group(&b) => {
            diff.add(path, Change::FieldScalarKindChanged);
        }
        // Confluent compares labels of scalars only, and only when both
        // fields have one.
        (FieldKind::Scalar, a, _) => {
            if let Some((Some(ol), Some(ul))) = labels {
                if ol != ul {
                    let change = if scalar_group(&a) == STRING_OR_BYTES {
                        Change::FieldStringOrBytesLabelChanged
                    } else {
                        Change::FieldNumericLabelChanged
                    };
                    diff.add(path, change);
                }
            }
        }
        (FieldKind::Map, Kind::Message(a), Kind::Message(b)) => {
            let key_path = format!("{path}/key");
            compare_field_types(
                diff,
                &key_path,
                &a.map_entry_key_field(),
                &b.map_entry_key_field(),
                None,
            );
            let value_path = format!("{path}/value");
            compare_field_types(
                diff,
                &value_path,
                &a.map_entry_value_field(),
                &b.map_entry_value_field(),
                None,
            );
        }
        (FieldKind::Message, Kind::Message(a), Kind::Message(b)) => {
            if local_name(&a) != local_name(&b) {
                diff.add(path, Change::FieldNamedTypeChanged);
                return;
            }
            let mark = diff.changes.len();
            compare_messages(diff, path, &a, &b);
            if diff.incompatible_since(mark) {
                diff.add(path, Change::FieldNamedTypeChanged);
            }
        }
        _ => {}
    }
}

/// The reasons `new` and `old` are incompatible in `direction`.
pub fn check(new: &ProtoSchema, old: &ProtoSchema, direction: Direction) -> Vec<String> {
    crate::compat::directional_reasons(new, old, direction, differences, Change::compatible)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(body: &str) -> ProtoSchema {
        let text = format!("syntax = \"proto3\";\npackage acme;\n{body}");
        parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {text}", e.0))
    }

    /// The incompatible changes from `old` to `new` (BACKWARD).
    fn breaks(old: &str, new: &str) -> Vec<Change> {
        differences(&proto(old), &proto(new))
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| !c.compatible())
            .collect()
    }

    fn all(old: &str, new: &str) -> Vec<Change> {
        differences(&proto(old), &proto(new))
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    const V1: &str = "message M { string a = 1; int32 b = 2; }";

    #[test]
    fn malformed_schemas_are_refused_with_a_reason() {
        for bad in [
            "",
            "message {",
            "syntax = \"proto3\"; message M { string a = 1; string b = 1; }",
            "syntax = \"proto3\"; message M { Nope a = 1; }",
            "syntax = \"proto3\"; import \"missing.proto\"; message M {}",
            "////",
        ] {
            let e = parse(bad, &[])
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn references_resolve_imports_and_well_known_types_resolve_alone() {
        let other = NamedReference {
            name: "acme/other.proto".into(),
            schema: "syntax = \"proto3\"; package acme; message O { int64 x = 1; }".into(),
        };
        let text = "syntax = \"proto3\"; package acme; import \"acme/other.proto\";\n\
                    import \"google/protobuf/timestamp.proto\";\n\
                    message M { O o = 1; google.protobuf.Timestamp at = 2; }";
        assert!(parse(text, &[]).is_err(), "an import without its reference");
        assert!(parse(text, std::slice::from_ref(&other)).is_ok());
    }

    #[test]
    fn text_and_its_descriptor_serialize_alike_and_both_parse() {
        let text =
            "syntax = \"proto3\";\npackage acme;\n// a comment\nmessage M {  string a = 1; }";
        let a = parse(text, &[]).unwrap();
        let spaced = parse(
            "syntax=\"proto3\"; package acme; message M { string a = 1; }",
            &[],
        )
        .unwrap();
        assert_eq!(a.serialized(), spaced.serialized());
        let from_descriptor = parse(&a.serialized(), &[]).unwrap();
        assert_eq!(from_descriptor.serialized(), a.serialized());
        assert_ne!(
            proto("message M { string b = 1; }").serialized(),
            a.serialized()
        );
    }

    #[test]
    fn adding_removing_and_renaming_fields_is_compatible() {
        let added = "message M { string a = 1; int32 b = 2; bool c = 3; }";
        assert_eq!(all(V1, added), vec![Change::FieldAdded]);
        assert_eq!(all(added, V1), vec![Change::FieldRemoved]);
        let renamed = "message M { string a = 1; int32 bee = 2; }";
        assert_eq!(all(V1, renamed), vec![Change::FieldNameChanged]);
    }

    #[test]
    fn scalar_changes_within_a_wire_group_are_compatible_across_groups_not() {
        assert!(breaks(V1, "message M { string a = 1; int64 b = 2; }").is_empty());
        assert!(breaks(V1, "message M { string a = 1; bool b = 2; }").is_empty());
        assert!(breaks(V1, "message M { bytes a = 1; int32 b = 2; }").is_empty());
        assert_eq!(
            breaks(V1, "message M { string a = 1; sint32 b = 2; }"),
            vec![Change::FieldScalarKindChanged]
        );
        assert_eq!(
            breaks(V1, "message M { string a = 1; double b = 2; }"),
            vec![Change::FieldScalarKindChanged]
        );
        assert_eq!(
            breaks(V1, "message M { int32 a = 1; int32 b = 2; }"),
            vec![Change::FieldScalarKindChanged]
        );
        // An enum reads as a general number.
        assert!(breaks(V1, "enum E { Z = 0; } message M { string a = 1; E b = 2; }").is_empty());
    }

    #[test]
    fn kind_changes_between_scalar_message_and_map_are_incompatible() {
        let msg = "message N { int32 x = 1; } message M { string a = 1; N b = 2; }";
        assert!(breaks(V1, msg).contains(&Change::FieldKindChanged));
        let map = "message M { string a = 1; map<string, int32> b = 2; }";
        assert!(breaks(V1, map).contains(&Change::FieldKindChanged));
        let map2 = "message M { string a = 1; map<string, string> b = 2; }";
        assert_eq!(breaks(map, map2), vec![Change::FieldScalarKindChanged]);
    }

    #[test]
    fn a_message_field_follows_its_type_by_name_and_contents() {
        let n1 = "message N { int32 x = 1; } message M { N n = 1; }";
        let renamed = "message P { int32 x = 1; } message M { P n = 1; }";
        assert!(breaks(n1, renamed).contains(&Change::FieldNamedTypeChanged));
        let changed = "message N { string x = 1; } message M { N n = 1; }";
        let b = breaks(n1, changed);
        assert!(b.contains(&Change::FieldScalarKindChanged), "{b:?}");
        assert!(b.contains(&Change::FieldNamedTypeChanged), "{b:?}");
        let grown = "message N { int32 x = 1; int32 y = 2; } message M { N n = 1; }";
        assert!(breaks(n1, grown).is_empty());
        // A recursive type is compared once.
        let rec = "message M { M next = 1; int32 v = 2; }";
        assert!(breaks(rec, rec).is_empty());
    }

    #[test]
    fn messages_added_or_moved_are_compatible_removed_not() {
        let two = "message M { string a = 1; int32 b = 2; } message N {}";
        assert_eq!(all(V1, two), vec![Change::MessageAdded]);
        assert_eq!(breaks(two, V1), vec![Change::MessageRemoved]);
        let swapped = "message N {} message M { string a = 1; int32 b = 2; }";
        // Both changed places.
        assert_eq!(
            all(two, swapped),
            vec![Change::MessageMoved, Change::MessageMoved]
        );
        let nested = "message M { message In { int32 x = 1; } In i = 1; }";
        let nested_gone = "message M { }";
        assert_eq!(
            breaks(nested, nested_gone),
            vec![Change::MessageRemoved],
            "a nested message removed"
        );
    }

    #[test]
    fn the_package_must_not_change() {
        let other = parse(
            "syntax = \"proto3\"; package other; message M { string a = 1; int32 b = 2; }",
            &[],
        )
        .unwrap();
        let d = differences(&proto(V1), &other);
        assert!(d.iter().any(|(_, c)| *c == Change::PackageChanged));
        assert!(!Change::PackageChanged.compatible());
    }

    #[test]
    fn enum_changes_are_all_compatible() {
        let e1 = "enum E { A = 0; B = 1; } message M { E e = 1; }";
        let e2 = "enum E { A = 0; C = 1; D = 2; } message M { E e = 1; }";
        let d = all(e1, e2);
        assert!(d.contains(&Change::EnumConstChanged), "{d:?}");
        assert!(d.contains(&Change::EnumConstAdded), "{d:?}");
        assert_eq!(all(e2, e1).last(), Some(&Change::EnumConstRemoved));
        assert!(breaks(e1, e2).is_empty());
        assert!(breaks(
            e1,
            "enum E { A = 0; } enum F { X = 0; } message M { E e = 1; }"
        )
        .is_empty());
        assert_eq!(
            all("enum E { A = 0; } message M {}", "message M {}"),
            vec![Change::EnumRemoved]
        );
    }

    #[test]
    fn oneofs_may_grow_and_take_in_one_field_but_not_lose_fields() {
        let o1 = "message M { oneof k { string a = 1; int32 b = 2; } }";
        let grown = "message M { oneof k { string a = 1; int32 b = 2; bool c = 3; } }";
        assert_eq!(all(o1, grown), vec![Change::OneofFieldAdded]);
        assert_eq!(breaks(grown, o1), vec![Change::OneofFieldRemoved]);
        // Moving one plain field into a new oneof is compatible; two are not.
        let plain = "message M { string a = 1; int32 b = 2; }";
        let one_in = "message M { oneof k { string a = 1; } int32 b = 2; }";
        assert!(breaks(plain, one_in).is_empty(), "{:?}", all(plain, one_in));
        assert_eq!(breaks(plain, o1), vec![Change::MultipleFieldsMovedToOneof]);
        // Moving a plain field into a oneof that had fields already.
        let three = "message M { string a = 1; oneof k { int32 b = 2; } }";
        let merged = "message M { oneof k { string a = 1; int32 b = 2; } }";
        assert_eq!(
            breaks(three, merged),
            vec![Change::FieldMovedToExistingOneof]
        );
        // Moving a field out of a oneof is not a removal.
        let out = "message M { string a = 1; oneof k { int32 b = 2; } }";
        assert!(breaks(o1, out).is_empty(), "{:?}", all(o1, out));
        // Removing or adding a whole oneof is compatible.
        let with_oneof = "message M { oneof k { string a = 1; } }";
        assert_eq!(all("message M {}", with_oneof), vec![Change::OneofAdded]);
        assert_eq!(all(with_oneof, "message M {}"), vec![Change::OneofRemoved]);
    }

    #[test]
    fn proto3_optional_is_a_plain_field() {
        let plain = "message M { string a = 1; }";
        let optional = "message M { optional string a = 1; }";
        assert!(
            all(plain, optional).is_empty(),
            "{:?}",
            all(plain, optional)
        );
    }

    #[test]
    fn required_fields_may_be_neither_added_nor_removed() {
        let p2 =
            |body: &str| parse(&format!("syntax = \"proto2\"; package acme; {body}"), &[]).unwrap();
        let v1 = p2("message M { optional string a = 1; }");
        let v2 = p2("message M { optional string a = 1; required int32 b = 2; }");
        let kinds = |a: &ProtoSchema, b: &ProtoSchema| -> Vec<Change> {
            differences(a, b).into_iter().map(|(_, c)| c).collect()
        };
        assert_eq!(kinds(&v1, &v2), vec![Change::RequiredFieldAdded]);
        assert_eq!(kinds(&v2, &v1), vec![Change::RequiredFieldRemoved]);
        assert!(!check(&v2, &v1, Direction::Backward).is_empty());
        assert!(!check(&v2, &v1, Direction::Forward).is_empty());
    }

    fn p2(body: &str) -> ProtoSchema {
        parse(&format!("syntax = \"proto2\"; package acme; {body}"), &[]).unwrap()
    }

    fn kinds(a: &ProtoSchema, b: &ProtoSchema) -> Vec<Change> {
        differences(a, b).into_iter().map(|(_, c)| c).collect()
    }

    #[test]
    fn a_number_changing_label_is_incompatible_both_ways() {
        let optional = p2("message M { optional int32 n = 1; }");
        let required = p2("message M { required int32 n = 1; }");
        let repeated = p2("message M { repeated int32 n = 1; }");
        for (a, b) in [
            (&optional, &required),
            (&optional, &repeated),
            (&required, &repeated),
        ] {
            assert_eq!(kinds(a, b), vec![Change::FieldNumericLabelChanged]);
            assert_eq!(kinds(b, a), vec![Change::FieldNumericLabelChanged]);
            assert!(!check(b, a, Direction::Backward).is_empty());
        }
        // Enums, bools, fixed and floating numbers are numbers too.
        for ty in ["E", "bool", "fixed64", "double", "sint32"] {
            let body =
                |label: &str| format!("enum E {{ Z = 0; }} message M {{ {label} {ty} n = 1; }}");
            assert_eq!(
                kinds(&p2(&body("optional")), &p2(&body("repeated"))),
                vec![Change::FieldNumericLabelChanged],
                "{ty}"
            );
        }
        // proto3: `optional` against `repeated`.
        assert_eq!(
            breaks(
                "message M { optional int64 n = 1; }",
                "message M { repeated int64 n = 1; }"
            ),
            vec![Change::FieldNumericLabelChanged]
        );
    }

    #[test]
    fn a_string_or_bytes_changing_label_is_compatible() {
        let optional = p2("message M { optional string s = 1; }");
        let repeated = p2("message M { repeated bytes s = 1; }");
        assert_eq!(
            kinds(&optional, &repeated),
            vec![Change::FieldStringOrBytesLabelChanged]
        );
        assert!(check(&repeated, &optional, Direction::Both).is_empty());
    }

    #[test]
    fn labels_count_only_when_both_fields_have_one_and_only_for_scalars() {
        // A proto3 field written without a label has none, as in Confluent's
        // parser: it may become repeated or optional.
        let plain = "message M { int32 n = 1; }";
        assert!(all(plain, "message M { repeated int32 n = 1; }").is_empty());
        assert!(all(plain, "message M { optional int32 n = 1; }").is_empty());
        // A oneof member has no label either.
        let in_oneof = p2("message M { oneof k { int32 n = 1; } }");
        let repeated = p2("message M { repeated int32 n = 1; }");
        assert_eq!(
            kinds(&in_oneof, &repeated),
            vec![Change::OneofRemoved, Change::OneofFieldMovedToTopLevel]
        );
        // Messages are compared by contents, not label.
        let one = p2("message N {} message M { optional N n = 1; }");
        let many = p2("message N {} message M { repeated N n = 1; }");
        assert!(kinds(&one, &many).is_empty());
    }

    #[test]
    fn a_label_change_read_from_a_descriptor_counts_alike() {
        // confluent-kafka's Python serializer registers the base64
        // descriptor, where every proto3 field has a label.
        let one = proto("message M { optional int32 n = 1; }");
        let many = proto("message M { repeated int32 n = 1; }");
        let one = parse(&one.serialized(), &[]).unwrap();
        let many = parse(&many.serialized(), &[]).unwrap();
        assert_eq!(kinds(&one, &many), vec![Change::FieldNumericLabelChanged]);
        let plain = parse(&proto("message M { int32 n = 1; }").serialized(), &[]).unwrap();
        assert!(kinds(&plain, &many).is_empty());
    }

    #[test]
    fn removed_fields_need_not_be_reserved() {
        // Confluent's diff does not look at reserved numbers or names.
        let reserved = "message M { reserved 2; reserved \"b\"; string a = 1; }";
        assert_eq!(all(V1, reserved), vec![Change::FieldRemoved]);
        assert_eq!(
            all(V1, "message M { string a = 1; }"),
            vec![Change::FieldRemoved]
        );
    }

    #[test]
    fn check_reports_each_direction() {
        let v1 = proto(V1);
        let v2 = proto("message M { string a = 1; sint32 b = 2; }");
        assert!(check(&v1, &v1, Direction::Both).is_empty());
        let r = check(&v2, &v1, Direction::Backward);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].contains("FieldScalarKindChanged") && r[0].contains("#/M/2"),
            "{r:?}"
        );
        assert_eq!(check(&v2, &v1, Direction::Both).len(), 2);
    }
}
