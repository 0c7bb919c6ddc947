//! The names rules may read, and how the engine hands their values over.

use std::collections::HashMap;

use riskd_core::event::{EventKind, KindMask};
use riskd_core::{FieldType, Value};

/// Where the engine keeps a value; chosen by the pipeline when it registers a
/// name, and the only thing a compiled rule uses to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NameInfo {
    pub ty: FieldType,
    pub kinds: KindMask,
    pub slot: Slot,
}

/// Names an expression may reference, registered by the pipeline before
/// loading rules. Lookups happen at load time only.
#[derive(Default, Clone, Debug)]
pub struct Schema {
    order: Vec<String>,
    by_name: HashMap<String, NameInfo>,
}

impl Schema {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or re-registers) a name. `kinds`: the event kinds on which
    /// the name has a value; a rule whose `events` include other kinds and
    /// that references the name is a compile error (`E-NOT-AVAILABLE`).
    pub fn add(&mut self, name: &str, ty: FieldType, kinds: KindMask, slot: Slot) {
        let info = NameInfo { ty, kinds, slot };
        if self.by_name.insert(name.to_string(), info).is_none() {
            self.order.push(name.to_string());
        }
    }

    /// Registered names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// Type, event kinds and slot of a registered name.
    pub fn lookup(&self, name: &str) -> Option<(FieldType, KindMask, Slot)> {
        self.by_name.get(name).map(|i| (i.ty, i.kinds, i.slot))
    }

    pub(crate) fn get(&self, name: &str) -> Option<NameInfo> {
        self.by_name.get(name).copied()
    }
}

/// How the engine gives values to rules at evaluation time. Monomorphized
/// into the evaluator: no dynamic dispatch on the hot path.
///
/// `get` must return a value of the type registered for the slot, or
/// `Value::Missing`; a value of another type (or a NaN number) is read as
/// missing.
pub trait Source {
    fn kind(&self) -> EventKind;
    fn get(&self, slot: Slot) -> Value<'_>;
}
