//! The analysts' rule language, compiled at load time.
//!
//! Risk analysts write rules in TOML files under `rules/` (see
//! `docs/rules.md`); this crate turns them into an evaluator the pipeline
//! runs once per event. It is a small compiler with one module per stage:
//!
//! ```text
//! chain.toml, *.toml --config--> rule tables (every key and value with its span)
//!   `when` text --lexer--> tokens --parser--> syntax tree
//!     --typecheck--> typed tree (names -> slots, lists -> sets, types checked)
//!     --compile--> folded tree + whole-set checks (duplicates, unreachable, actions)
//! lists/*.txt --lists--> hash sets (strings), merged ranges (CIDR), sorted numbers
//! RuleSet::evaluate(source) --eval--> Verdict (action, score adjustment, hits)
//! ```
//!
//! Every author mistake, from any stage, becomes a [`Diagnostic`] with a code,
//! file:line:col and a hint; loading collects all of them. At run time no
//! name is looked up and nothing is allocated: values are read by [`Slot`]
//! through the monomorphized [`Source`] trait, strings are borrowed, and the
//! only growth is of the reused [`Verdict::hits`] vector.
//!
//! Analyst tests (`rules/tests/*.toml`) run through [`run_tests`].

pub mod apr;
mod compile;
mod config;
mod diag;
mod eval;
mod lexer;
mod lists;
mod parser;
mod ruleset;
mod schema;
mod testing;
mod typecheck;

pub use riskd_core::event::{EventKind, KindMask, ALL_KINDS};
pub use riskd_core::{Action, FieldType, Value};

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use eval::ExprValue;
pub use ruleset::{Combine, Expression, Hit, HitLabels, Mode, RuleInfo, RuleSet, Verdict};
pub use schema::{Schema, Slot, Source};
pub use testing::{run_tests, CaseResult, TestReport};
