//! tunelab's evaluation suite: suites of cases in categories (`seen`, `heldout`, `ood`,
//! `guard`, custom), rubrics of weighted checks, scorers, generation backends (a local model
//! with adapters, an OpenAI-compatible endpoint, or a predictions file), a generation cache
//! that lets an interrupted run resume, and the run store (`run.json` + `results.parquet`).
//!
//! Layers, each using only those below it:
//! 1. [`error`], [`hashing`], [`excerpt`], [`metrics`], [`stats`]: utilities.
//! 2. [`case::Case`] (a prompt, a reference and metadata; no rubric) and [`chat::ChatClient`]
//!    (the one OpenAI-compatible client).
//! 3. [`scorers`]: the [`scorers::Scorer`] trait, its implementations and the registry.
//! 4. [`rubric::Rubric`]: weighted checks, and a case's score from their values.
//! 5. [`suite::Suite`]: case sets mapped to rubrics; [`guard`] ships the guard suite.
//! 6. [`backend`] turns cases into outputs; [`cache::GenerationCache`] remembers them.
//! 7. [`run`] ties these together and writes a run directory; [`run::summary`] reads it back.
//! 8. [`compare`] reads stored runs back and compares them: paired statistics, the report
//!    and the regression gate.
//! 9. [`review`] pairs stored runs' answers for blind A/B review: studies, the vote store,
//!    results, and the review service. [`interop`] exports to LLaMA-Factory.

#![warn(missing_docs)]

pub mod backend;
pub mod cache;
pub mod case;
pub mod chat;
pub mod compare;
pub mod error;
pub mod excerpt;
pub mod guard;
pub mod hashing;
pub mod interop;
pub mod metrics;
pub mod review;
pub mod rubric;
pub mod run;
pub mod scorers;
pub mod stats;
pub mod suite;

pub use error::{Error, Result};
