//! Entity-level scores of sequence labelling, as seqeval computes them.
//!
//! Entities are read from tag sequences (`O`, `B-X`, `I-X`, `E-X`, `S-X`) in one of two ways:
//! [`Reading::Strict`] is seqeval's `mode="strict"`: only well-formed entities of the scheme
//! count (in IOB2 an `I-X` without a `B-X` before it is no entity; in IOBES an entity must end
//! with `E-X` or be `S-X`). [`Reading::Lenient`] is seqeval's default (conlleval's rules): a
//! stray `I-X` opens an entity. An entity is correct when its span and type are both exact.
//! Averages follow seqeval's `classification_report`: micro over all entities, macro the plain
//! mean over the types in either the truth or the predictions, weighted by true support.

use crate::{f1, ratio, MetricsError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// How tag sequences are read into entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reading {
    /// Only entities that are well formed in IOB2 (`B-X I-X*`).
    Strict,
    /// Only entities that are well formed in IOBES (`S-X` or `B-X I-X* E-X`).
    StrictIobes,
    /// conlleval's rules: any change of type or a `B`/`S` opens an entity.
    Lenient,
}

/// One entity: tokens `start..end` of a sentence, and its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// Type (the tag without its prefix).
    pub label: String,
}

/// Precision, recall, F1 and true support of one type or one average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityScore {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// True entities.
    pub support: usize,
}

/// Entity-level scores of one evaluation, plus the token-level confusion of the tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityReport {
    /// How the tags were read.
    pub reading: Reading,
    /// Sentences scored.
    pub sentences: usize,
    /// Over all entities.
    pub micro: EntityScore,
    /// Plain mean over the types.
    pub macro_avg: EntityScore,
    /// Mean over the types weighted by true support.
    pub weighted: EntityScore,
    /// Per type, in name order.
    pub per_type: BTreeMap<String, EntityScore>,
    /// Tags, in name order, that index [`token_confusion`](Self::token_confusion).
    pub tags: Vec<String>,
    /// `token_confusion[true][predicted]` counts of tokens.
    pub token_confusion: Vec<Vec<usize>>,
}

fn split_tag(tag: &str) -> (char, &str) {
    if tag == "O" || tag.is_empty() {
        return ('O', "");
    }
    match tag.split_once('-') {
        Some((prefix, label)) => (prefix.chars().next().unwrap_or('O'), label),
        None => (tag.chars().next().unwrap_or('O'), ""),
    }
}

/// The entities of one tag sequence, read the given way.
pub fn entities<S: AsRef<str>>(tags: &[S], reading: Reading) -> Vec<Entity> {
    let parsed: Vec<(char, &str)> = tags.iter().map(|t| split_tag(t.as_ref())).collect();
    match reading {
        Reading::Lenient => lenient(&parsed),
        Reading::Strict => strict(&parsed, false),
        Reading::StrictIobes => strict(&parsed, true),
    }
}

/// seqeval's `get_entities`: `end_of_chunk` / `start_of_chunk` over the tags plus a final `O`.
fn lenient(tags: &[(char, &str)]) -> Vec<Entity> {
    let mut out = Vec::new();
    let (mut prev, mut prev_type) = ('O', "");
    let mut begin = 0;
    for i in 0..=tags.len() {
        let (tag, label) = tags.get(i).copied().unwrap_or(('O', ""));
        let ends = matches!(prev, 'E' | 'S')
            || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
            || (prev != 'O' && prev_type != label);
        if ends {
            out.push(Entity {
                start: begin,
                end: i,
                label: prev_type.to_string(),
            });
        }
        let starts = matches!(tag, 'B' | 'S')
            || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
            || (tag != 'O' && prev_type != label);
        if starts {
            begin = i;
        }
        (prev, prev_type) = (tag, label);
    }
    out
}

/// seqeval's strict `Tokens.entities` for IOB2 (`iobes == false`) or IOBES.
fn strict(tags: &[(char, &str)], iobes: bool) -> Vec<Entity> {
    let inside = |prev: (char, &str), cur: (char, &str)| {
        prev.1 == cur.1 && matches!(prev.0, 'B' | 'I') && (cur.0 == 'I' || (iobes && cur.0 == 'E'))
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < tags.len() {
        let first = tags[i];
        let opens = first.0 == 'B' || (iobes && first.0 == 'S');
        if !opens {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        let mut last = first;
        while end < tags.len() && !(iobes && first.0 == 'S') && inside(last, tags[end]) {
            last = tags[end];
            end += 1;
        }
        let closed = !iobes || matches!(last.0, 'E' | 'S');
        if closed {
            out.push(Entity {
                start: i,
                end,
                label: first.1.to_string(),
            });
        }
        i = end;
    }
    out
}

fn score(correct: usize, predicted: usize, support: usize) -> EntityScore {
    let precision = ratio(correct as f64, predicted as f64);
    let recall = ratio(correct as f64, support as f64);
    EntityScore {
        precision,
        recall,
        f1: f1(precision, recall),
        support,
    }
}

/// Scores predicted tag sequences against true ones, sentence by sentence.
pub fn evaluate_tags<S: AsRef<str>>(
    truth: &[Vec<S>],
    predicted: &[Vec<S>],
    reading: Reading,
) -> Result<EntityReport, MetricsError> {
    if truth.is_empty() {
        return Err(MetricsError::Empty);
    }
    if truth.len() != predicted.len() {
        return Err(MetricsError::Shape {
            len: predicted.len(),
            rows: truth.len(),
            classes: 1,
        });
    }
    if let Some(row) = (0..truth.len()).find(|&i| truth[i].len() != predicted[i].len()) {
        return Err(MetricsError::Shape {
            len: predicted[row].len(),
            rows: truth[row].len(),
            classes: 1,
        });
    }
    let gold: Vec<Vec<Entity>> = truth.iter().map(|t| entities(t, reading)).collect();
    let pred: Vec<Vec<Entity>> = predicted.iter().map(|t| entities(t, reading)).collect();
    let mut report = evaluate_entities(&gold, &pred, reading);
    (report.tags, report.token_confusion) = token_confusion(truth, predicted);
    Ok(report)
}

/// Scores predicted entities against true ones, sentence by sentence (no token confusion).
pub fn evaluate_entities(
    truth: &[Vec<Entity>],
    predicted: &[Vec<Entity>],
    reading: Reading,
) -> EntityReport {
    // (true, predicted, correct) per type.
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for (gold, pred) in truth.iter().zip(predicted) {
        let gold_set: HashSet<&Entity> = gold.iter().collect();
        for e in gold {
            counts.entry(e.label.clone()).or_default().0 += 1;
        }
        for e in pred {
            let c = counts.entry(e.label.clone()).or_default();
            c.1 += 1;
            c.2 += usize::from(gold_set.contains(e));
        }
    }
    let per_type: BTreeMap<String, EntityScore> = counts
        .iter()
        .map(|(label, &(t, p, c))| (label.clone(), score(c, p, t)))
        .collect();
    let (t, p, c) = counts
        .values()
        .fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
    let types = per_type.len().max(1) as f64;
    let mean = |f: fn(&EntityScore) -> f64| per_type.values().map(f).sum::<f64>() / types;
    let weighted = |f: fn(&EntityScore) -> f64| {
        ratio(
            per_type.values().map(|s| f(s) * s.support as f64).sum(),
            t as f64,
        )
    };
    EntityReport {
        reading,
        sentences: truth.len(),
        micro: score(c, p, t),
        macro_avg: EntityScore {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: t,
        },
        weighted: EntityScore {
            precision: weighted(|s| s.precision),
            recall: weighted(|s| s.recall),
            f1: weighted(|s| s.f1),
            support: t,
        },
        per_type,
        tags: Vec::new(),
        token_confusion: Vec::new(),
    }
}

fn token_confusion<S: AsRef<str>>(
    truth: &[Vec<S>],
    predicted: &[Vec<S>],
) -> (Vec<String>, Vec<Vec<usize>>) {
    let tags: BTreeSet<&str> = truth
        .iter()
        .chain(predicted)
        .flat_map(|s| s.iter().map(|t| t.as_ref()))
        .collect();
    let index: BTreeMap<&str, usize> = tags.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut confusion = vec![vec![0; tags.len()]; tags.len()];
    for (gold, pred) in truth.iter().zip(predicted) {
        for (g, p) in gold.iter().zip(pred) {
            confusion[index[g.as_ref()]][index[p.as_ref()]] += 1;
        }
    }
    (tags.into_iter().map(String::from).collect(), confusion)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(tags: &str, reading: Reading) -> Vec<(usize, usize, String)> {
        let tags: Vec<&str> = tags.split_whitespace().collect();
        entities(&tags, reading)
            .into_iter()
            .map(|e| (e.start, e.end, e.label))
            .collect()
    }

    #[test]
    fn strict_iob2_drops_an_i_without_a_b() {
        let e = ents("I-PER I-PER O B-LOC I-LOC B-LOC I-ORG", Reading::Strict);
        assert_eq!(
            e,
            vec![(3, 5, "LOC".into()), (5, 6, "LOC".into())],
            "the stray I-PERs and I-ORG are no entities"
        );
    }

    #[test]
    fn lenient_opens_entities_on_stray_inside_tags() {
        let e = ents("I-PER I-PER O B-LOC I-ORG", Reading::Lenient);
        assert_eq!(
            e,
            vec![
                (0, 2, "PER".into()),
                (3, 4, "LOC".into()),
                (4, 5, "ORG".into())
            ]
        );
    }

    #[test]
    fn strict_iobes_needs_an_end() {
        let e = ents(
            "B-PER I-PER E-PER S-LOC B-ORG I-ORG O E-LOC",
            Reading::StrictIobes,
        );
        assert_eq!(e, vec![(0, 3, "PER".into()), (3, 4, "LOC".into())]);
    }

    #[test]
    fn scores_count_exact_span_and_type() {
        let truth = vec![vec!["B-PER", "I-PER", "O", "B-LOC"]];
        let pred = vec![vec!["B-PER", "O", "O", "B-LOC"]];
        let r = evaluate_tags(&truth, &pred, Reading::Strict).unwrap();
        assert_eq!(r.micro.support, 2);
        assert!((r.micro.precision - 0.5).abs() < 1e-12);
        assert!((r.per_type["LOC"].f1 - 1.0).abs() < 1e-12);
        assert_eq!(r.per_type["PER"].f1, 0.0);
        assert_eq!(r.tags, vec!["B-LOC", "B-PER", "I-PER", "O"]);
        assert_eq!(r.token_confusion[2][3], 1, "I-PER predicted O once");
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let truth = vec![vec!["O", "O"]];
        let pred = vec![vec!["O"]];
        assert!(evaluate_tags(&truth, &pred, Reading::Strict).is_err());
        let none: Vec<Vec<&str>> = Vec::new();
        assert_eq!(
            evaluate_tags(&none, &none, Reading::Strict),
            Err(MetricsError::Empty)
        );
    }
}
