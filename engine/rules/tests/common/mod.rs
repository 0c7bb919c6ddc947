//! Helpers shared by the integration tests: schemas, a map-backed source,
//! and rule directories written to temporary folders.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use riskd_core::fields::FIELDS;
use riskd_rules::{EventKind, FieldType, KindMask, Schema, Slot, Source, Value, ALL_KINDS};

/// The names the pipeline registers for the starter rules.
pub fn starter_schema() -> Schema {
    let mut s = Schema::new();
    let mut next = 0u32;
    let mut add = |s: &mut Schema, name: &str, ty: FieldType, kinds: KindMask| {
        s.add(name, ty, kinds, Slot(next));
        next += 1;
    };
    for f in FIELDS {
        add(&mut s, f.name, f.ty, f.kinds);
    }
    let app = EventKind::LoanApplication.bit();
    // Every feature of the starter set in features/, as the pipeline registers them.
    let features_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../features");
    let set = riskd_features::FeatureSet::load(&features_dir).unwrap_or_else(|e| panic!("{e:?}"));
    for d in &set.defs {
        let kinds = if d.entity == riskd_features::EntityKind::Event { app } else { ALL_KINDS };
        add(&mut s, &d.name, FieldType::Num, kinds);
    }
    add(&mut s, "model.score", FieldType::Num, app);
    add(&mut s, "model.probability", FieldType::Num, app);
    s
}

/// A small schema for expression tests: short names of every type.
pub fn expr_schema() -> Schema {
    let mut s = Schema::new();
    let names: [(&str, FieldType); 9] = [
        ("n", FieldType::Num),
        ("m", FieldType::Num),
        ("z", FieldType::Num),
        ("s", FieldType::Str),
        ("t", FieldType::Str),
        ("b", FieldType::Bool),
        ("c", FieldType::Bool),
        ("ip", FieldType::Ip),
        ("ip2", FieldType::Ip),
    ];
    for (i, (n, ty)) in names.iter().enumerate() {
        s.add(n, *ty, ALL_KINDS, Slot(i as u32));
    }
    s.add("event.amount", FieldType::Num, EventKind::LoanApplication.bit() | EventKind::Repayment.bit(), Slot(100));
    s.add("event.success", FieldType::Bool, EventKind::Login.bit(), Slot(101));
    s
}

#[derive(Clone, Debug)]
pub enum Owned {
    Num(f64),
    Bool(bool),
    Str(String),
    Ip(IpAddr),
}

/// Values by slot, for one event.
pub struct MapSource {
    pub kind: EventKind,
    pub values: HashMap<Slot, Owned>,
}

impl MapSource {
    pub fn new(kind: EventKind) -> Self {
        MapSource { kind, values: HashMap::new() }
    }

    /// Sets a value by name (the schema gives the slot and the type).
    pub fn set(mut self, schema: &Schema, name: &str, text: &str) -> Self {
        let (slot, ty) = lookup(schema, name);
        let v = match ty {
            FieldType::Num => Owned::Num(text.parse().unwrap_or_else(|_| panic!("{name}: bad number {text}"))),
            FieldType::Bool => Owned::Bool(text == "true"),
            FieldType::Str => Owned::Str(text.to_string()),
            FieldType::Ip => Owned::Ip(text.parse().unwrap_or_else(|_| panic!("{name}: bad ip {text}"))),
        };
        self.values.insert(slot, v);
        self
    }
}

fn lookup(schema: &Schema, name: &str) -> (Slot, FieldType) {
    let (ty, _, slot) = schema.lookup(name).unwrap_or_else(|| panic!("unknown test name {name}"));
    (slot, ty)
}

impl Source for MapSource {
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn get(&self, slot: Slot) -> Value<'_> {
        match self.values.get(&slot) {
            None => Value::Missing,
            Some(Owned::Num(n)) => Value::Num(*n),
            Some(Owned::Bool(b)) => Value::Bool(*b),
            Some(Owned::Str(s)) => Value::Str(s),
            Some(Owned::Ip(ip)) => Value::Ip(*ip),
        }
    }
}

/// Writes files (path relative to the folder, contents) into a new temp dir.
pub fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (rel, text) in files {
        let p = dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
    }
    dir
}

/// The repository's `rules/` folder.
pub fn starter_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    p.canonicalize().unwrap_or(p)
}

/// 1-based line and column (in characters) of the first occurrence of
/// `needle` in `text` after the first occurrence of `after`.
pub fn pos(text: &str, after: &str, needle: &str) -> (usize, usize) {
    let base = text.find(after).unwrap_or_else(|| panic!("`{after}` not in text"));
    let at = base + text[base..].find(needle).unwrap_or_else(|| panic!("`{needle}` not after `{after}`"));
    let line = text[..at].matches('\n').count() + 1;
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..at].chars().count() + 1)
}
