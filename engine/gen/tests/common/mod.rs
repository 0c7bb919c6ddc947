#![allow(dead_code)]

use std::collections::BTreeMap;

use riskd_gen::{GenConfig, GenLine, GenStats, Generator, LineKind};
use serde_json::Value;

/// The committed sample's configuration, with 16 malformed lines so that
/// both variants of each dead-letter reason appear.
pub fn sample_config() -> GenConfig {
    GenConfig { bad: 16, ..GenConfig::default() }
}

pub fn generate(cfg: &GenConfig) -> (Vec<GenLine>, GenStats) {
    let mut g = Generator::new(cfg).expect("valid config");
    let lines: Vec<GenLine> = g.by_ref().collect();
    (lines, g.stats())
}

/// A valid event, parsed, with its label.
pub struct Ev {
    pub v: Value,
    pub time_ms: i64,
    pub bad: Option<bool>,
}

impl Ev {
    pub fn ty(&self) -> &str {
        self.v["event_type"].as_str().unwrap()
    }
    pub fn id(&self) -> &str {
        self.v["event_id"].as_str().unwrap()
    }
    pub fn user(&self) -> &str {
        self.v["entities"]["user_id"].as_str().unwrap()
    }
    pub fn entity(&self, k: &str) -> Option<&str> {
        self.v["entities"][k].as_str()
    }
    pub fn payload(&self, k: &str) -> &Value {
        &self.v["payload"][k]
    }
}

pub fn events(lines: &[GenLine]) -> Vec<Ev> {
    lines
        .iter()
        .filter(|l| matches!(l.meta.kind, LineKind::Event(_)))
        .map(|l| Ev { v: serde_json::from_str(&l.text).unwrap(), time_ms: l.meta.time_ms, bad: l.meta.bad })
        .collect()
}

pub fn by_user(evs: &[Ev]) -> BTreeMap<&str, Vec<&Ev>> {
    let mut m: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in evs {
        m.entry(e.user()).or_default().push(e);
    }
    m
}

pub fn schema() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/event.schema.json");
    let text = std::fs::read_to_string(path).expect("schemas/event.schema.json");
    serde_json::from_str(&text).expect("schema is JSON")
}

pub fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options().should_validate_formats(true).build(&schema()).expect("schema compiles")
}

pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
