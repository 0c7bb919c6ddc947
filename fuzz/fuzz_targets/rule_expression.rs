//! A rule condition's text through the whole compiler (lexer, parser, type
//! check, folding), evaluated on an empty application: never a panic;
//! every rejection is a diagnostic that renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riskd_core::event::EventKind;
use riskd_core::Value;
use riskd_fuzz::{ruleset, schema};
use riskd_rules::{Slot, Source};

struct Nothing;

impl Source for Nothing {
    fn kind(&self) -> EventKind {
        EventKind::LoanApplication
    }
    fn get(&self, _: Slot) -> Value<'_> {
        Value::Missing
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ruleset().expression(text, schema()) {
        Ok(e) => {
            let _ = e.evaluate(&Nothing);
        }
        Err(d) => {
            assert!(!d.0.is_empty(), "a rejected expression has a diagnostic");
            let _ = d.render();
        }
    }
});
