//! Quality presets of `compare`: which candidates a run fits, fixed once for all data sets
//! (how they were chosen, and what they score: `bench/results/presets.md`), and the rule
//! that picks the winner among them.

use serde::Serialize;

/// How much `compare` tries: each preset adds to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// Frozen embeddings and TF-IDF with logistic regression (each block alone, and fused),
    /// and the five ensembles of the three: seconds to minutes on a CPU.
    #[default]
    Fast,
    /// Adds a linear SVM and gradient-boosted trees on the sparse TF-IDF + dense embedding
    /// block, an MLP on the embeddings and the shared hidden layer over both, as singles and
    /// as ensemble members.
    Medium,
    /// Adds the encoder fine-tuned with a linear head and with the shared hidden layer, each
    /// a candidate of its own and a member of every ensemble: k + 1 fine-tuning runs each.
    Best,
}

/// The candidates of a `compare` run (the fields of [`crate::compare::CompareSpec`] that a
/// preset sets).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Single models, FEATURES:HEAD.
    pub singles: Vec<String>,
    /// The ensembles' members, FEATURES:HEAD.
    pub members: Vec<String>,
    /// Ensemble strategies.
    pub ensembles: Vec<String>,
    /// The encoder fine-tuned with a linear head.
    pub finetune: bool,
    /// The encoder trained end to end with the shared hidden layer.
    pub finetune_shared: bool,
    /// The fine-tuned candidates as members of every ensemble too.
    pub finetuned_members: bool,
}

const FAST_MODELS: [&str; 3] = ["emb:logreg", "tfidf:logreg", "tfidf+emb:logreg"];
const MEDIUM_MODELS: [&str; 4] = [
    "tfidf+emb:svm",
    "emb:mlp",
    "tfidf+emb:shared",
    "tfidf+emb:gbdt",
];
/// The most classes for which a preset fits gradient-boosted trees: boosting fits one tree
/// per class and round, so its cost grows with the classes (on 77 classes it would take
/// longer than every other medium candidate together).
pub const GBDT_MAX_CLASSES: usize = 20;
const ENSEMBLES: [&str; 5] = ["hard_vote", "soft_vote", "weighted", "stacking", "adaptive"];

impl Preset {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Fast => "fast",
            Preset::Medium => "medium",
            Preset::Best => "best",
        }
    }

    /// The candidates it fits on data with `classes` classes (see [`GBDT_MAX_CLASSES`]).
    pub fn candidates_for(self, classes: usize) -> Candidates {
        let mut c = self.candidates();
        if classes > GBDT_MAX_CLASSES {
            let keep = |m: &String| !m.ends_with(":gbdt");
            c.singles.retain(keep);
            c.members.retain(keep);
        }
        c
    }

    /// The candidates it fits.
    pub fn candidates(self) -> Candidates {
        let mut models: Vec<String> = FAST_MODELS.iter().map(|s| s.to_string()).collect();
        if self != Preset::Fast {
            models.extend(MEDIUM_MODELS.iter().map(|s| s.to_string()));
        }
        let best = self == Preset::Best;
        Candidates {
            singles: models.clone(),
            members: models,
            ensembles: ENSEMBLES.iter().map(|s| s.to_string()).collect(),
            finetune: best,
            finetune_shared: best,
            finetuned_members: best,
        }
    }
}

/// How the winner is picked from the cross-validated scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SelectRule {
    /// The best mean CV accuracy (the earlier candidate on ties).
    #[default]
    BestCv,
    /// The simplest candidate whose mean CV accuracy is within one standard error of the
    /// best one's (the fold standard deviation over √folds); among equally simple ones, the
    /// best. Simplicity: a single model, then feature fusion, then an ensemble, then a
    /// fine-tuned encoder.
    OneSe,
}

/// How complex a leaderboard entry of `kind` is (lower: simpler).
pub(crate) fn complexity(kind: &str) -> u8 {
    match kind {
        "single" => 0,
        "feature_fusion" => 1,
        "ensemble" => 2,
        _ => 3,
    }
}

/// One candidate as the rule sees it: kind and cross-validated mean and standard deviation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored<'a> {
    pub kind: &'a str,
    pub cv: f64,
    pub std: f64,
}

/// The index of the best CV candidate and of the one `rule` picks, with the reason in words.
/// `None` without candidates.
pub(crate) fn pick(
    rule: SelectRule,
    scored: &[Scored<'_>],
    names: &[&str],
    folds: usize,
) -> Option<(usize, usize, String)> {
    let best = (0..scored.len()).fold(None::<usize>, |b, i| match b {
        Some(b) if scored[b].cv >= scored[i].cv => Some(b),
        _ => Some(i),
    })?;
    let b = scored[best];
    let best_reason = format!(
        "best cross-validated accuracy ({:.2} ± {:.2} %)",
        100.0 * b.cv,
        100.0 * b.std
    );
    if rule == SelectRule::BestCv {
        return Some((best, best, best_reason));
    }
    let se = b.std / (folds.max(1) as f64).sqrt();
    let within = |i: &usize| scored[*i].cv >= b.cv - se;
    let chosen = (0..scored.len()).filter(within).fold(best, |c, i| {
        let (ci, cc) = (complexity(scored[i].kind), complexity(scored[c].kind));
        if ci < cc || (ci == cc && scored[i].cv > scored[c].cv) {
            i
        } else {
            c
        }
    });
    if chosen == best {
        return Some((best, best, best_reason));
    }
    let s = scored[chosen];
    let reason = format!(
        "{} ({}, {:.2} ± {:.2} %) is within one standard error ({:.2} pp) of the best, {} \
         ({}, {:.2} %), and simpler",
        names[chosen],
        s.kind,
        100.0 * s.cv,
        100.0 * s.std,
        100.0 * se,
        names[best],
        b.kind,
        100.0 * b.cv
    );
    Some((best, chosen, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: &str, cv: f64, std: f64) -> Scored<'_> {
        Scored { kind, cv, std }
    }

    #[test]
    fn one_se_prefers_a_simpler_candidate_within_noise_and_best_cv_does_not() {
        let scored = [
            s("single", 0.840, 0.01),
            s("feature_fusion", 0.848, 0.01),
            s("ensemble", 0.850, 0.01),
        ];
        let names = ["a", "b", "c"];
        // se = 0.01 / √4 = 0.005: a (0.840) is out, b (0.848) is in.
        let (best, chosen, why) = pick(SelectRule::OneSe, &scored, &names, 4).unwrap();
        assert_eq!((best, chosen), (2, 1));
        assert!(why.contains("within one standard error"), "{why}");
        let (best, chosen, _) = pick(SelectRule::BestCv, &scored, &names, 4).unwrap();
        assert_eq!((best, chosen), (2, 2));
    }

    #[test]
    fn ties_go_to_the_earlier_and_no_candidates_give_none() {
        let scored = [s("ensemble", 0.9, 0.0), s("ensemble", 0.9, 0.0)];
        let (best, chosen, _) = pick(SelectRule::OneSe, &scored, &["a", "b"], 5).unwrap();
        assert_eq!((best, chosen), (0, 0));
        assert!(pick(SelectRule::OneSe, &[], &[], 5).is_none());
    }

    #[test]
    fn presets_grow_and_best_fine_tunes() {
        let (f, m, b) = (
            Preset::Fast.candidates(),
            Preset::Medium.candidates(),
            Preset::Best.candidates(),
        );
        assert!(f.singles.iter().all(|s| m.singles.contains(s)));
        assert!(m.singles.len() > f.singles.len());
        assert_eq!(m.singles, b.singles);
        assert!(!m.finetune && b.finetune && b.finetune_shared && b.finetuned_members);
        let many = Preset::Medium.candidates_for(GBDT_MAX_CLASSES + 1);
        assert!(m.singles.iter().any(|s| s.ends_with(":gbdt")));
        assert!(!many
            .singles
            .iter()
            .chain(&many.members)
            .any(|s| s.ends_with(":gbdt")));
        assert_eq!(Preset::Medium.candidates_for(GBDT_MAX_CLASSES), m);
    }
}
