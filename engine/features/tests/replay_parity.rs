//! The starter feature set over `replay-data/events.jsonl`: the engine's
//! window state against the naive reference (which rescans each entity's
//! history and shares no window code with it), equal on every feature of
//! every event, in the file's order and in event-time order.

use std::path::Path;
use std::sync::Arc;

use riskd_core::event::Event;
use riskd_core::{Decoder, KeyRing, Limits};
use riskd_features::reference::Reference;
use riskd_features::{FeatureEngine, FeatureSet, FeatureVector};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn events() -> Vec<Event> {
    let keys = KeyRing::from_toml(&KeyRing::generate_file("k1"), "test").unwrap();
    let decoder = Decoder::new(Limits::default(), keys);
    let text = std::fs::read_to_string(repo().join("replay-data/events.jsonl")).unwrap();
    text.lines().filter_map(|l| decoder.decode(l.as_bytes()).ok()).collect()
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check(set: &Arc<FeatureSet>, events: Vec<Event>) -> usize {
    let mut engine = FeatureEngine::new(set.clone(), [9; 16]);
    let mut reference = Reference::new(set.clone());
    let mut fv = FeatureVector::default();
    let mut non_trivial = 0;
    for (i, ev) in events.into_iter().enumerate() {
        engine.update(&ev, &mut fv);
        reference.push(ev);
        let want = reference.values(i);
        for d in &set.defs {
            let (got, want) = (fv.0[d.slot], want[d.slot]);
            assert!(
                same(got, want),
                "event {i} ({}), {}: engine {got}, reference {want}",
                reference.events()[i].id,
                d.name
            );
            non_trivial += usize::from(!got.is_nan() && got != 0.0);
        }
    }
    non_trivial
}

#[test]
fn starter_features_equal_the_reference_on_replay_data() {
    let set = Arc::new(FeatureSet::load(&repo().join("features")).unwrap());
    let mut events = events();
    assert!(events.len() >= 5000);
    let in_file_order = check(&set, events.clone());
    events.sort_by_key(|e| e.time_ms);
    let in_time_order = check(&set, events);
    // Not a vacuous comparison: most values are neither missing nor zero.
    assert!(in_file_order > 20_000 && in_time_order > 20_000, "{in_file_order} / {in_time_order}");
}
