//! Agreement between raters who label the same units with nominal categories: Krippendorff's
//! α over any number of raters (missing labels allowed) and Cohen's κ for two raters.
//!
//! Both are chance-corrected: 1 is perfect agreement, 0 what raters labelling at random with
//! the observed category frequencies would reach, below 0 systematic disagreement. Each is
//! `None` when it is undefined (too few pairable labels, or a single category in use).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

/// Krippendorff's α for nominal data. `units` holds, per unit, the labels its raters gave
/// (one per rater; raters who skipped the unit are simply absent). Units with fewer than
/// two labels carry no pairing information and are left out, as Krippendorff prescribes.
pub fn krippendorff_alpha_nominal<L: Ord + Clone>(units: &[Vec<L>]) -> Option<f64> {
    // Coincidence matrix: each ordered pair of labels within a unit, weighted 1 / (m_u - 1).
    let mut coincidence: BTreeMap<(L, L), f64> = BTreeMap::new();
    let mut marginal: BTreeMap<L, f64> = BTreeMap::new();
    for labels in units.iter().filter(|u| u.len() >= 2) {
        let w = 1.0 / (labels.len() - 1) as f64;
        for (i, a) in labels.iter().enumerate() {
            for (j, b) in labels.iter().enumerate() {
                if i != j {
                    *coincidence.entry((a.clone(), b.clone())).or_default() += w;
                    *marginal.entry(a.clone()).or_default() += w;
                }
            }
        }
    }
    let n: f64 = marginal.values().sum();
    if n <= 1.0 || marginal.len() < 2 {
        return None;
    }
    let observed_disagreement: f64 = coincidence.iter().filter(|((a, b), _)| a != b).map(|(_, o)| o).sum::<f64>() / n;
    let expected_pairs: f64 = marginal.values().map(|c| c * (n - c)).sum::<f64>();
    let expected_disagreement = expected_pairs / (n * (n - 1.0));
    Some(1.0 - observed_disagreement / expected_disagreement)
}

/// Cohen's κ of two raters' labels on the same units (`pairs[i]` = the two labels of unit
/// `i`). `None` with no units, or when chance agreement is already perfect (one category).
pub fn cohen_kappa<L: Ord + Clone + Hash>(pairs: &[(L, L)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let categories: BTreeSet<&L> = pairs.iter().flat_map(|(a, b)| [a, b]).collect();
    let observed = pairs.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let share = |c: &L, first: bool| pairs.iter().filter(|(a, b)| if first { a == c } else { b == c }).count() as f64 / n;
    let expected: f64 = categories.iter().map(|c| share(c, true) * share(c, false)).sum();
    if (1.0 - expected).abs() < 1e-12 {
        return None;
    }
    Some((observed - expected) / (1.0 - expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the worked example
    /// with four observers, twelve units and missing data: nominal α = 0.743.
    #[test]
    fn alpha_matches_krippendorff_s_worked_example() {
        let table: [[Option<u8>; 12]; 4] = [
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(1), Some(4), Some(1), Some(2), None, None, None],
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(2), Some(4), Some(1), Some(2), Some(5), None, Some(3)],
            [None, Some(3), Some(3), Some(3), Some(2), Some(3), Some(4), Some(2), Some(2), Some(5), Some(1), None],
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(4), Some(4), Some(1), Some(2), Some(5), Some(1), None],
        ];
        let units: Vec<Vec<u8>> = (0..12).map(|u| table.iter().filter_map(|row| row[u]).collect()).collect();
        let alpha = krippendorff_alpha_nominal(&units).unwrap();
        assert!((alpha - 0.743).abs() < 5e-4, "{alpha}");
    }

    #[test]
    fn alpha_is_one_for_perfect_agreement_and_undefined_for_one_category() {
        assert_eq!(krippendorff_alpha_nominal(&[vec!["a", "a"], vec!["b", "b", "b"]]), Some(1.0));
        assert_eq!(krippendorff_alpha_nominal(&[vec!["a", "a"], vec!["a", "a"]]), None);
        assert_eq!(krippendorff_alpha_nominal::<&str>(&[vec!["a"], vec!["b"]]), None, "no unit has two labels");
    }

    /// The textbook example (Wikipedia, "Cohen's kappa"): 20 yes/yes, 5 yes/no, 10 no/yes,
    /// 15 no/no gives κ = 0.4.
    #[test]
    fn kappa_matches_the_textbook_example() {
        let mut pairs = Vec::new();
        pairs.extend(std::iter::repeat_n(("yes", "yes"), 20));
        pairs.extend(std::iter::repeat_n(("yes", "no"), 5));
        pairs.extend(std::iter::repeat_n(("no", "yes"), 10));
        pairs.extend(std::iter::repeat_n(("no", "no"), 15));
        let kappa = cohen_kappa(&pairs).unwrap();
        assert!((kappa - 0.4).abs() < 1e-12, "{kappa}");
        assert_eq!(cohen_kappa(&[("a", "a"), ("a", "a")]), None);
    }
}
