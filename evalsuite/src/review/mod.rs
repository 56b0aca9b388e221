//! Blind A/B review: studies that pair the answers of stored runs case by case, a SQLite
//! store of reviewers and votes, the statistics of a closed study, and the HTTP service
//! reviewers open in a browser.
//!
//! A study directory holds:
//! - `study.json` ([`study::Study`]): the items (prompt, reference, each system's answer
//!   under an opaque system id) and the tasks (an item and a pair of systems) — everything
//!   the service serves from, and nothing that names a run, model or adapter;
//! - `key.json` ([`study::StudyKey`]): which run each opaque system id stands for, read only
//!   by `tunelab review results` and, once the study is closed, the admin-only results
//!   endpoint;
//! - `review.db` ([`store::Store`]): reviewers (hashed tokens), reservations and every vote
//!   with the order its sides were shown in (WAL, synchronous commits).

pub mod leak;
pub mod listen;
pub mod results;
pub mod server;
pub mod store;
pub mod study;
pub mod token;

pub use results::{blinded_study_results, study_results, ReviewResults};
pub use store::{Choice, Store};
pub use study::{create_study, Study, StudyKey, StudyOptions};
