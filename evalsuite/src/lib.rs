//! tunelab's evaluation suite: suites of cases in categories (`seen`, `heldout`, `ood`,
//! `guard`, custom), rubrics of weighted checks, scorers, generation backends (a local model
//! with adapters, an OpenAI-compatible endpoint, or a predictions file), a generation cache
//! that lets an interrupted run resume, and the run store (`run.json` + `results.parquet`).
//!
//! - [`suite::Suite`] loads a suite TOML and its JSONL cases; [`suite::new_suite`] builds one
//!   from a training split.
//! - [`rubric::Rubric`] holds the checks; [`scorers`] computes their values.
//! - [`backend`] turns cases into outputs; [`cache::GenerationCache`] remembers them.
//! - [`run`] ties these together and writes a run directory; [`run::summary`] reads it back.

#![warn(missing_docs)]

pub mod backend;
pub mod cache;
pub mod guard;
pub mod hashing;
pub mod metrics;
pub mod rubric;
pub mod run;
pub mod scorers;
pub mod stats;
pub mod suite;
