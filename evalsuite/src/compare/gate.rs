//! The regression gate: a policy of rules checked against a [`Comparison`], each passing,
//! failing, or unable to decide (a data error). The default policy follows the method:
//! better on held-out in-domain cases, not worse on guard and out-of-domain ones, and an
//! adapter that changed nothing fails.

use serde::{Deserialize, Serialize};

use super::{CategoryComparison, Comparison, FlagKind};
use crate::error::{Error, Result};

/// Default non-inferiority margin on case scores (0–1 scale). Measured on the shipped guard
/// suite (64 cases), the 95 % interval of a paired difference spans about ±0.045 for an
/// adapter that changes the answers, so a margin of 0.02 could never be shown (it would
/// take about 330 guard cases); 0.05 is the smallest margin the shipped suite can decide.
pub const DEFAULT_MARGIN: f64 = 0.05;

/// What a rule requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Superiority: the interval's lower bound is above `min_effect`.
    Better,
    /// Non-inferiority: the interval's lower bound is at least −`margin`.
    NotWorse,
    /// No check goes from pass to fail on more than `max` cases.
    MaxNewFailures,
    /// The candidate's outputs differ from the baseline's (no "adapter had no effect").
    HasEffect,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The requirement.
    pub require: Requirement,
    /// The category it applies to (`better`, `not_worse`; optional for `max_new_failures`).
    #[serde(default)]
    pub category: Option<String>,
    /// `better`: the smallest improvement that counts (default 0).
    #[serde(default)]
    pub min_effect: Option<f64>,
    /// `not_worse`: the largest drop tolerated (default [`DEFAULT_MARGIN`]).
    #[serde(default)]
    pub margin: Option<f64>,
    /// `max_new_failures`: cases allowed to newly fail a check (default 0).
    #[serde(default)]
    pub max: Option<usize>,
    /// Skip the rule, instead of a data error, when its category is not in the runs.
    #[serde(default)]
    pub optional: bool,
}

/// A gate policy (`gate.toml`: `[[rule]]` tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The rules, checked in order.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    /// Held-out better, guard and ood not worse by more than [`DEFAULT_MARGIN`], and an
    /// effect at all.
    fn default() -> Self {
        let rule = |require, category: Option<&str>| Rule {
            require,
            category: category.map(str::to_string),
            min_effect: None,
            margin: None,
            max: None,
            optional: true,
        };
        Self {
            rules: vec![
                rule(Requirement::Better, Some("heldout")),
                rule(Requirement::NotWorse, Some("guard")),
                rule(Requirement::NotWorse, Some("ood")),
                rule(Requirement::HasEffect, None),
            ],
        }
    }
}

impl Policy {
    /// Parses a policy file's text; errors name the rule and field.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let policy: Policy = toml::from_str(text).map_err(|e| crate::rubric::toml_error(text, &e))?;
        for (i, r) in policy.rules.iter().enumerate() {
            let at = |m: &str| format!("rule {}: {m}", i + 1);
            if matches!(r.require, Requirement::Better | Requirement::NotWorse) && r.category.is_none() {
                return Err(at("`better` and `not_worse` need a `category`"));
            }
            // A field the requirement does not read would be ignored: refuse it instead.
            let reads = |field: &str| match r.require {
                Requirement::Better => matches!(field, "category" | "min_effect"),
                Requirement::NotWorse => matches!(field, "category" | "margin"),
                Requirement::MaxNewFailures => matches!(field, "category" | "max"),
                Requirement::HasEffect => false,
            };
            let set = [("category", r.category.is_some()), ("min_effect", r.min_effect.is_some()), ("margin", r.margin.is_some()), ("max", r.max.is_some())];
            if let Some((field, _)) = set.iter().find(|(field, is_set)| *is_set && !reads(field)) {
                return Err(at(&format!("`{field}` does not apply to this `require` (it would be ignored)")));
            }
            for (name, v) in [("min_effect", r.min_effect), ("margin", r.margin)] {
                if v.is_some_and(|x| !x.is_finite() || !(0.0..=1.0).contains(&x)) {
                    return Err(at(&format!("`{name}` must be between 0 and 1")));
                }
            }
        }
        if policy.rules.is_empty() {
            return Err("the policy has no [[rule]]".into());
        }
        Ok(policy)
    }

    /// Reads a policy file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = tunelab::fsutil::read_input_text(path)?;
        Self::parse(&text).map_err(|message| Error::Invalid(format!("gate policy {}: {message}", path.display())))
    }
}

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The requirement holds.
    Pass,
    /// The candidate broke it.
    Fail,
    /// The data cannot decide it (a missing category, mismatched runs).
    Error,
    /// Optional and not applicable (its category is not in the runs).
    Skipped,
}

/// One rule's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The rule in words.
    pub rule: String,
    /// Its category, if any.
    pub category: Option<String>,
    /// The result.
    pub status: Status,
    /// The figure it was decided on, in words.
    pub figure: String,
}

/// A gate's decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Per rule, in policy order; mismatch flags come first as errors.
    pub outcomes: Vec<Outcome>,
}

impl Decision {
    /// 0 when every rule passed (or was skipped), 1 when one failed, 2 when the data could
    /// not decide (mismatched runs, a missing category).
    pub fn exit_code(&self) -> u8 {
        if self.outcomes.iter().any(|o| o.status == Status::Error) {
            2
        } else if self.outcomes.iter().any(|o| o.status == Status::Fail) {
            1
        } else {
            0
        }
    }

    /// One line per rule, then the verdict.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for o in &self.outcomes {
            let status = match o.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Error => "ERROR",
                Status::Skipped => "skip",
            };
            out.push_str(&format!("{status:<5} {:<44} {}\n", o.rule, o.figure));
        }
        out.push_str(match self.exit_code() {
            0 => "gate: pass\n",
            1 => "gate: FAIL (the candidate regressed or broke a rule)\n",
            _ => "gate: ERROR (the runs cannot be compared as the policy asks)\n",
        });
        out
    }
}

/// Checks `policy` against `comparison`.
pub fn decide(comparison: &Comparison, policy: &Policy) -> Decision {
    let mut outcomes: Vec<Outcome> = comparison
        .flags
        .iter()
        .filter(|f| f.kind.is_mismatch())
        .map(|f| Outcome { rule: "runs are comparable".into(), category: None, status: Status::Error, figure: f.message.clone() })
        .collect();
    for rule in &policy.rules {
        outcomes.push(check(comparison, rule));
    }
    Decision { outcomes }
}

fn interval(c: &CategoryComparison) -> String {
    let unscored = if c.unscored > 0 { format!(" ({} more left out: every check errored on a side)", c.unscored) } else { String::new() };
    format!("Δ {:+.3} [{:+.3}, {:+.3}], n {}{unscored}", c.score.diff, c.score.bootstrap.0, c.score.bootstrap.1, c.n)
}

/// A rule's category without cases scored in both runs: skipped (when `optional`) only if
/// the baseline has none; a category the baseline has and the candidate lacks, or whose
/// cases all errored on one side, is a data error, never a pass.
fn absent(comparison: &Comparison, name: &str, optional: bool) -> (Status, String) {
    let (baseline, candidate) = comparison.run_cases.get(name).copied().unwrap_or_default();
    if baseline == 0 {
        let status = if optional { Status::Skipped } else { Status::Error };
        return (status, format!("no `{name}` cases in the baseline"));
    }
    let figure = if candidate == 0 {
        format!("the baseline has {baseline} `{name}` case(s), the candidate none")
    } else if let Some(c) = comparison.category(name) {
        format!("none of the {} shared `{name}` case(s) has a score in both runs (every check errored on a side)", c.unscored)
    } else {
        format!("the runs share no `{name}` case ({baseline} in the baseline, {candidate} in the candidate)")
    };
    (Status::Error, figure)
}

fn check(comparison: &Comparison, rule: &Rule) -> Outcome {
    let category = rule.category.clone();
    let outcome = |rule_text: String, status, figure: String| Outcome { rule: rule_text, category: category.clone(), status, figure };
    let find = |name: &str| comparison.category(name).filter(|c| c.n > 0);
    match rule.require {
        Requirement::Better | Requirement::NotWorse => {
            let name = rule.category.as_deref().unwrap_or_default();
            let text = match rule.require {
                Requirement::Better => format!("{name}: better by more than {:.3}", rule.min_effect.unwrap_or(0.0)),
                _ => format!("{name}: not worse by more than {:.3}", rule.margin.unwrap_or(DEFAULT_MARGIN)),
            };
            let Some(c) = find(name) else {
                let (status, figure) = absent(comparison, name, rule.optional);
                return outcome(text, status, figure);
            };
            if c.n < super::MIN_CASES_FOR_VERDICT {
                return outcome(
                    text,
                    Status::Error,
                    format!("only {} `{name}` case(s) in both runs; at least {} are needed to decide", c.n, super::MIN_CASES_FOR_VERDICT),
                );
            }
            let low = c.score.bootstrap.0;
            let holds = match rule.require {
                Requirement::Better => low > rule.min_effect.unwrap_or(0.0),
                _ => low >= -rule.margin.unwrap_or(DEFAULT_MARGIN),
            };
            let mut figure = interval(c);
            if !holds && rule.require == Requirement::Better {
                figure.push_str(&format!("; detectable effect at this n {:.3}", c.score.detectable_effect));
            }
            outcome(text, if holds { Status::Pass } else { Status::Fail }, figure)
        }
        Requirement::MaxNewFailures => {
            let max = rule.max.unwrap_or(0);
            let scope = rule.category.as_deref().map_or("every category".to_string(), str::to_string);
            let text = format!("{scope}: no check newly fails on more than {max} case(s)");
            let cats: Vec<&CategoryComparison> = comparison.categories.iter().filter(|c| rule.category.as_ref().is_none_or(|n| &c.category == n)).collect();
            if cats.is_empty() {
                let (status, figure) = match &rule.category {
                    Some(name) => absent(comparison, name, rule.optional),
                    None => (if rule.optional { Status::Skipped } else { Status::Error }, "the runs share no cases".to_string()),
                };
                return outcome(text, status, figure);
            }
            let worst = cats.iter().flat_map(|c| c.checks.iter().map(move |k| (c, k))).max_by_key(|(_, k)| k.flips.pass_to_fail);
            match worst {
                Some((c, k)) => {
                    let figure = format!("worst: {}/{} newly fails on {} case(s)", c.category, k.check, k.flips.pass_to_fail);
                    outcome(text, if k.flips.pass_to_fail <= max { Status::Pass } else { Status::Fail }, figure)
                }
                None => outcome(text, Status::Pass, "no checks".into()),
            }
        }
        Requirement::HasEffect => {
            let text = "the adapter changed the outputs".to_string();
            let figure = format!("{} of {} outputs identical to the baseline's", comparison.identical_outputs, comparison.shared_cases);
            let no_effect = comparison.flags.iter().any(|f| f.kind == FlagKind::NoEffect);
            outcome(text, if no_effect { Status::Fail } else { Status::Pass }, figure)
        }
    }
}
