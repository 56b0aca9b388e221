//! Sanity flags: reasons a comparison may not mean what it seems to (an adapter with no
//! effect, different suites or settings, cases on one side only, one sample of sampled
//! decoding, checks that errored).

use std::collections::HashSet;

use serde::Serialize;

use super::table::RunTable;

/// Share of identical outputs at or above which an adapter "had no effect".
pub const NO_EFFECT_SHARE: f64 = 0.95;

/// What a flag is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The candidate's outputs equal the baseline's on ≥ 95 % of cases.
    NoEffect,
    /// The runs evaluated different suites (name or content hash).
    DifferentSuite,
    /// The runs used different rubrics (names, hashes or checks).
    DifferentRubrics,
    /// The runs decoded differently (temperature, length, sampling settings).
    DifferentDecoding,
    /// Some cases are in one run only.
    OneSided,
    /// Sampled decoding (temperature > 0) with a single sample per case.
    SingleSample,
    /// Checks errored in a run (left out of its figures).
    Errored,
}

impl FlagKind {
    /// Whether comparing the two runs is not meaningful at all (a gate answers "data error").
    pub fn is_mismatch(self) -> bool {
        matches!(self, FlagKind::DifferentSuite | FlagKind::DifferentRubrics)
    }
}

/// One flag with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    /// What it is about.
    pub kind: FlagKind,
    /// What was found, with numbers.
    pub message: String,
}

/// The flags for comparing `candidate` with `baseline`, given how many cases they share and
/// how many of those have identical outputs.
pub fn find(baseline: &RunTable, candidate: &RunTable, shared: usize, identical: usize) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut flag = |kind, message: String| flags.push(Flag { kind, message });
    let (b, c) = (&baseline.record, &candidate.record);
    if shared > 0 && identical as f64 >= NO_EFFECT_SHARE * shared as f64 {
        flag(
            FlagKind::NoEffect,
            format!("{identical} of {shared} outputs are identical to the baseline's: the adapter had no effect (learning rate or epochs too low?)"),
        );
    }
    if b.suite.name != c.suite.name || b.suite.sha256 != c.suite.sha256 {
        flag(FlagKind::DifferentSuite, format!("suite {} ({}) vs {} ({})", b.suite.name, short(&b.suite.sha256), c.suite.name, short(&c.suite.sha256)));
    }
    let rubrics = |r: &crate::run::record::RunRecord| r.rubrics.iter().map(|x| (x.name.clone(), x.sha256.clone())).collect::<Vec<_>>();
    if rubrics(b) != rubrics(c) {
        let names = |r: &crate::run::record::RunRecord| r.rubrics.iter().map(|x| format!("{} ({})", x.name, short(&x.sha256))).collect::<Vec<_>>().join(", ");
        flag(FlagKind::DifferentRubrics, format!("rubrics {} vs {}", names(b), names(c)));
    }
    let decoding = |r: &crate::run::record::RunRecord| serde_json::to_string(&r.decoding).unwrap_or_default();
    if decoding(b) != decoding(c) {
        flag(FlagKind::DifferentDecoding, format!("decoding {} vs {}", decoding(b), decoding(c)));
    }
    let keys = |t: &RunTable| t.cases.iter().map(|c| (c.category.clone(), c.case_id.clone())).collect::<HashSet<_>>();
    let (kb, kc) = (keys(baseline), keys(candidate));
    let (only_b, only_c) = (kb.difference(&kc).count(), kc.difference(&kb).count());
    if only_b + only_c > 0 {
        flag(FlagKind::OneSided, format!("{only_b} case(s) only in {} and {only_c} only in {}; they are left out", b.name, c.name));
    }
    for r in [b, c] {
        if r.decoding.temperature > 0.0 {
            flag(
                FlagKind::SingleSample,
                format!("{} sampled at temperature {} with one sample per case: its scores carry sampling noise", r.name, r.decoding.temperature),
            );
        }
        if r.counts.errored_checks > 0 {
            flag(FlagKind::Errored, format!("{}: {} check(s) errored and are left out of its figures", r.name, r.counts.errored_checks));
        }
    }
    flags
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
