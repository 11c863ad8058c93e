//! What the answer engine knows of a question against every entry: BM25 and dense scores
//! against the entries' answers and against their questions (and paraphrases), and the
//! intent classifier's probability of each entry's category; the candidates (the union of the
//! four retrievers' top entries) with their features for the ranker.

use crate::error::Result;
use lmfuse_retrieval::fusion::RRF_K;
use lmfuse_retrieval::{Candidate, Index};
use std::collections::BTreeMap;

/// The ranker's features of a (question, entry) pair, in order.
pub const FAQ_FEATURES: [&str; 12] = [
    "bm25_answer",
    "bm25_answer_over_best",
    "bm25_question",
    "bm25_question_over_best",
    "dense_answer",
    "dense_answer_minus_best",
    "dense_question",
    "dense_question_minus_best",
    "has_question",
    "intent",
    "rrf",
    "log_answer_words",
];

/// Position of the fused prior (`rrf`) among [`FAQ_FEATURES`].
pub const PRIOR: usize = 10;

/// The engine's parts a question is scored against.
pub(crate) struct Parts<'a> {
    /// One document per entry: its answer (entry order).
    pub(crate) answers: &'a Index,
    /// One document per question or paraphrase, `question_owner` giving its entry.
    pub(crate) questions: Option<&'a Index>,
    /// Each question's entry.
    pub(crate) question_owner: &'a [usize],
    /// Each entry's category index, if any.
    pub(crate) entry_category: &'a [Option<usize>],
    /// Words in each entry's answer.
    pub(crate) answer_words: &'a [usize],
}

/// Every entry's scores for one question (`-inf`/0 where a retriever has nothing).
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    pub(crate) bm25_answer: Vec<f32>,
    pub(crate) bm25_question: Vec<f32>,
    pub(crate) dense_answer: Vec<f32>,
    pub(crate) dense_question: Vec<f32>,
    /// The intent classifier's class probabilities (empty without categories).
    pub(crate) intent: Vec<f32>,
}

impl Parts<'_> {
    fn entries(&self) -> usize {
        self.answer_words.len()
    }

    /// The signals of `question` (its vector `vector`), leaving out the table question
    /// `exclude` (a training question scored as if it were new).
    pub(crate) fn signals(
        &self,
        question: &str,
        vector: &[f32],
        intent: Vec<f32>,
        exclude: Option<usize>,
    ) -> Result<Signals> {
        let n = self.entries();
        let mut bm25_answer = vec![0.0f32; n];
        for (doc, s) in self.answers.bm25(question, n)? {
            bm25_answer[doc] = s;
        }
        let dense_answer = self.answers.dense_scores(vector)?;
        let mut bm25_question = vec![0.0f32; n];
        let mut dense_question = vec![f32::NEG_INFINITY; n];
        if let Some(qs) = self.questions {
            for (doc, s) in qs.bm25(question, self.question_owner.len())? {
                if Some(doc) != exclude {
                    let slot = &mut bm25_question[self.question_owner[doc]];
                    *slot = slot.max(s);
                }
            }
            for (doc, s) in qs.dense_scores(vector)?.into_iter().enumerate() {
                if Some(doc) != exclude {
                    let slot = &mut dense_question[self.question_owner[doc]];
                    *slot = slot.max(s);
                }
            }
        }
        Ok(Signals {
            bm25_answer,
            bm25_question,
            dense_answer,
            dense_question,
            intent,
        })
    }

    /// The union of each retriever's top `depth` entries, with their features, in entry order.
    pub(crate) fn candidates(&self, s: &Signals, depth: usize) -> Vec<Candidate> {
        let lists = [
            &s.bm25_answer,
            &s.bm25_question,
            &s.dense_answer,
            &s.dense_question,
        ];
        let mut ranks: BTreeMap<usize, [Option<usize>; 4]> = BTreeMap::new();
        for (l, scores) in lists.iter().enumerate() {
            let positive = |i: &usize| l >= 2 || scores[*i] > 0.0;
            let top = lmfuse_retrieval::top_k(scores, depth);
            for (rank, (entry, _)) in top.into_iter().filter(|h| positive(&h.0)).enumerate() {
                ranks.entry(entry).or_default()[l] = Some(rank);
            }
        }
        let best = |v: &[f32]| {
            v.iter()
                .copied()
                .filter(|x| x.is_finite())
                .fold(0.0, f32::max)
        };
        let (best_ba, best_bq) = (best(&s.bm25_answer), best(&s.bm25_question));
        let (best_da, best_dq) = (best(&s.dense_answer), best(&s.dense_question));
        ranks
            .into_iter()
            .map(|(e, r)| {
                let rrf: f32 = r
                    .iter()
                    .flatten()
                    .map(|&k| 1.0 / (RRF_K + k as f32 + 1.0))
                    .sum();
                let dq = s.dense_question[e];
                let (dense_q, has_q) = if dq.is_finite() {
                    (dq, 1.0)
                } else {
                    (0.0, 0.0)
                };
                let intent = self.entry_category[e]
                    .and_then(|c| s.intent.get(c).copied())
                    .unwrap_or(0.0);
                let features = vec![
                    s.bm25_answer[e],
                    s.bm25_answer[e] / best_ba.max(f32::MIN_POSITIVE),
                    s.bm25_question[e],
                    s.bm25_question[e] / best_bq.max(f32::MIN_POSITIVE),
                    s.dense_answer[e].max(-1.0),
                    s.dense_answer[e].max(-1.0) - best_da,
                    dense_q,
                    if has_q > 0.0 { dense_q - best_dq } else { -1.0 },
                    has_q,
                    intent,
                    rrf,
                    (1.0 + self.answer_words[e] as f32).ln(),
                ];
                Candidate { doc: e, features }
            })
            .collect()
    }
}

/// The features of the engine's confidence in its first answer, in order.
pub const CONFIDENCE_FEATURES: [&str; 6] = [
    "top_score",
    "margin",
    "top_dense_answer",
    "top_dense_question",
    "intent_max",
    "out_of_scope",
];

/// The confidence features of a ranked candidate list (`scores` by the ranker, aligned with
/// `candidates`) and the question's out-of-scope score.
pub(crate) fn confidence_features(
    candidates: &[Candidate],
    scores: &[f32],
    s: &Signals,
    oos: f32,
) -> Vec<f32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let top = order.first().map_or(0.0, |&i| scores[i]);
    let second = order.get(1).map_or(0.0, |&i| scores[i]);
    let entry = order.first().map(|&i| candidates[i].doc);
    let of = |v: &[f32]| entry.map_or(0.0, |e| if v[e].is_finite() { v[e] } else { 0.0 });
    vec![
        top,
        top - second,
        of(&s.dense_answer),
        of(&s.dense_question),
        s.intent.iter().copied().fold(0.0, f32::max),
        oos,
    ]
}
