//! The promotion rule, as a plain function: a challenger replaces the champion only
//! if it passed every gate and beats the champion's macro-F1 on the same held-out
//! slice by the required margin.

use crate::registry::decision::Verdict;

/// A model's held-out macro-F1, with its version for the reason sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing<'a> {
    pub version: &'a str,
    pub macro_f1: f64,
}

/// The verdict and a sentence saying why. `champion` is None when there is no
/// champion to beat; `gate_failures` are the challenger's failed gates.
pub fn judge(
    champion: Option<Standing<'_>>,
    challenger: Standing<'_>,
    gate_failures: &[String],
    margin: f64,
) -> (Verdict, String) {
    if !gate_failures.is_empty() {
        return (
            Verdict::Rejected,
            format!(
                "challenger {} failed a gate on its own test split: {}",
                challenger.version,
                gate_failures.join("; ")
            ),
        );
    }
    let Some(champion) = champion else {
        return (
            Verdict::Promoted,
            format!(
                "no champion to beat; challenger {} passed every gate (held-out macro-F1 {:.4})",
                challenger.version, challenger.macro_f1
            ),
        );
    };
    let gain = challenger.macro_f1 - champion.macro_f1;
    // Float noise must not decide a tie at the margin; a tie never promotes.
    let beats = gain > 0.0 && gain + 1e-9 >= margin;
    let verdict = if beats {
        Verdict::Promoted
    } else {
        Verdict::Rejected
    };
    let reason = format!(
        "challenger {} held-out macro-F1 {:.4} vs champion {} {:.4}: {:+.4}, {} the required margin {}",
        challenger.version,
        challenger.macro_f1,
        champion.version,
        champion.macro_f1,
        gain,
        if beats { "at least" } else { "short of" },
        margin
    );
    (verdict, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(version: &str, macro_f1: f64) -> Standing<'_> {
        Standing { version, macro_f1 }
    }

    #[test]
    fn a_challenger_that_beats_the_champion_by_the_margin_is_promoted() {
        let (verdict, reason) = judge(Some(standing("v1", 0.78)), standing("v2", 0.81), &[], 0.01);
        assert_eq!(verdict, Verdict::Promoted);
        assert!(
            reason.contains("0.8100") && reason.contains("0.7800"),
            "{reason}"
        );
        // Exactly the margin is enough, whatever the float rounding.
        let (verdict, _) = judge(Some(standing("v1", 0.80)), standing("v2", 0.81), &[], 0.01);
        assert_eq!(verdict, Verdict::Promoted);
    }

    #[test]
    fn a_challenger_short_of_the_margin_is_rejected() {
        let (verdict, reason) = judge(Some(standing("v1", 0.80)), standing("v2", 0.805), &[], 0.01);
        assert_eq!(verdict, Verdict::Rejected);
        assert!(reason.contains("short of"), "{reason}");
        let (verdict, _) = judge(Some(standing("v1", 0.9)), standing("v2", 0.8), &[], 0.01);
        assert_eq!(verdict, Verdict::Rejected);
    }

    #[test]
    fn a_tie_is_rejected_even_with_no_margin() {
        let (verdict, _) = judge(Some(standing("v1", 0.8)), standing("v2", 0.8), &[], 0.0);
        assert_eq!(verdict, Verdict::Rejected);
    }

    #[test]
    fn a_challenger_that_failed_a_gate_is_rejected_however_good() {
        let failures = vec!["macro_f1 0.50 < 0.55".to_string()];
        let (verdict, reason) = judge(
            Some(standing("v1", 0.1)),
            standing("v2", 0.9),
            &failures,
            0.01,
        );
        assert_eq!(verdict, Verdict::Rejected);
        assert!(reason.contains("failed a gate"), "{reason}");
        let (verdict, _) = judge(None, standing("v2", 0.9), &failures, 0.01);
        assert_eq!(verdict, Verdict::Rejected);
    }

    #[test]
    fn without_a_champion_a_challenger_that_passed_the_gates_is_promoted() {
        let (verdict, reason) = judge(None, standing("v1", 0.7), &[], 0.01);
        assert_eq!(verdict, Verdict::Promoted);
        assert!(reason.contains("no champion"), "{reason}");
    }
}
