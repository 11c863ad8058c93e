//! Learning curves of active learning: [`simulate`] for each strategy and seed on one data
//! set's embeddings, summarised (mean ± std per number of labels), with the labels each
//! strategy needs to reach random sampling's final accuracy, as JSON and as an SVG plot.

use super::{simulate, CurvePoint, Labelled, SimulateSpec, Strategy};
use crate::data::{read_labelled, DataSpec};
use crate::encoders::{CacheSpec, EncoderChoice, Encoders};
use crate::ensure;
use crate::error::{Context, Result};
use crate::observe::Observer;
use lmfuse_core::{DenseMatrix, LabelSet};
use serde::Serialize;
use std::path::Path;

/// What [`learning_curves`] runs.
#[derive(Debug, Clone)]
pub struct CurvesSpec {
    /// The strategies compared (random sampling is the baseline of `labels_to_match`).
    pub strategies: Vec<Strategy>,
    /// One run per seed and strategy.
    pub seeds: Vec<u64>,
    /// The loop of each run (its strategy and seed are replaced).
    pub run: SimulateSpec,
}

/// One number of labels of a strategy's curve, over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryPoint {
    /// Labels bought.
    pub labels: usize,
    /// Mean test accuracy over the seeds.
    pub accuracy: f64,
    /// Its standard deviation (population) over the seeds.
    pub accuracy_std: f64,
    /// Mean macro F1.
    pub macro_f1: f64,
}

/// A strategy's learning curve.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyCurve {
    /// The strategy.
    pub strategy: Strategy,
    /// Mean ± std per number of labels.
    pub points: Vec<SummaryPoint>,
    /// The fewest labels at which the mean accuracy reaches random sampling's final mean
    /// accuracy (`None`: never within the budget).
    pub labels_to_match_random: Option<usize>,
    /// Every run, by seed.
    pub runs: Vec<Vec<CurvePoint>>,
}

/// The curves of every strategy on one data set.
#[derive(Debug, Clone, Serialize)]
pub struct CurvesReport {
    /// Texts in the pool (train, labels hidden).
    pub pool: usize,
    /// Texts scored after each round.
    pub test: usize,
    /// Classes of train.
    pub classes: usize,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// The loop's numbers.
    pub run: SimulateSpec,
    /// One per strategy, in the order asked.
    pub curves: Vec<StrategyCurve>,
}

/// Embeds `train` (the pool) and `test` with `encoder`, then runs [`simulate`] for each
/// strategy and seed of `spec`.
pub fn learning_curves(
    train: &Path,
    test: &Path,
    data: &DataSpec,
    (encoder, cache): (&EncoderChoice, &CacheSpec),
    spec: &CurvesSpec,
    on: &dyn Observer,
) -> Result<CurvesReport> {
    ensure!(!spec.strategies.is_empty(), "no strategy to run");
    ensure!(!spec.seeds.is_empty(), "no seed to run");
    let pool_rows = read_labelled(train, data, &[])?;
    let test_rows = read_labelled(test, data, &[])?;
    let labels = LabelSet::from_labels(pool_rows.labels.iter().map(String::as_str));
    let index = |rows: &lmfuse_data::LabelledTexts, path: &Path| -> Result<Vec<usize>> {
        rows.labels
            .iter()
            .zip(&rows.lines)
            .map(|(l, line)| {
                labels.index(l).with_context(|| {
                    format!(
                        "{}:{line}: label {l:?} is not a label of the pool",
                        path.display()
                    )
                })
            })
            .collect()
    };
    let (pool_y, test_y) = (index(&pool_rows, train)?, index(&test_rows, test)?);
    // Checked before the (slow) embedding.
    spec.run.check(pool_rows.texts.len())?;
    let mut encoders = Encoders::open(encoder, cache)?;
    let pool_x = DenseMatrix::from(encoders.embed(&pool_rows.texts, on)?.0);
    let test_x = DenseMatrix::from(encoders.embed(&test_rows.texts, on)?.0);
    let pool = Labelled {
        x: &pool_x,
        y: &pool_y,
        n_classes: labels.len(),
    };
    let test_set = Labelled {
        x: &test_x,
        y: &test_y,
        n_classes: labels.len(),
    };
    let mut curves = Vec::new();
    for &strategy in &spec.strategies {
        let runs = spec
            .seeds
            .iter()
            .map(|&seed| {
                let run = SimulateSpec {
                    strategy,
                    seed,
                    ..spec.run
                };
                simulate(pool, test_set, &run)
            })
            .collect::<Result<Vec<_>>>()?;
        curves.push(StrategyCurve {
            strategy,
            points: summarise(&runs),
            labels_to_match_random: None,
            runs,
        });
    }
    match_random(&mut curves);
    Ok(CurvesReport {
        pool: pool_x.rows(),
        test: test_x.rows(),
        classes: labels.len(),
        seeds: spec.seeds.clone(),
        run: spec.run,
        curves,
    })
}

/// Mean and spread per number of labels (every run has the same numbers).
fn summarise(runs: &[Vec<CurvePoint>]) -> Vec<SummaryPoint> {
    (0..runs[0].len())
        .map(|i| {
            let accuracy: Vec<f64> = runs.iter().map(|r| r[i].accuracy).collect();
            let mean = accuracy.iter().sum::<f64>() / accuracy.len() as f64;
            let var =
                accuracy.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accuracy.len() as f64;
            SummaryPoint {
                labels: runs[0][i].labels,
                accuracy: mean,
                accuracy_std: var.sqrt(),
                macro_f1: runs.iter().map(|r| r[i].macro_f1).sum::<f64>() / runs.len() as f64,
            }
        })
        .collect()
}

/// Fills in each curve's labels to reach random sampling's final mean accuracy, when random
/// sampling was run.
fn match_random(curves: &mut [StrategyCurve]) {
    let Some(target) = curves
        .iter()
        .find(|c| c.strategy == Strategy::Random)
        .and_then(|c| c.points.last())
        .map(|p| p.accuracy)
    else {
        return;
    };
    for c in curves {
        c.labels_to_match_random = c
            .points
            .iter()
            .find(|p| p.accuracy >= target - 1e-12)
            .map(|p| p.labels);
    }
}

/// The curves as an SVG line plot: mean test accuracy against labels, one line per strategy.
pub fn curves_svg(report: &CurvesReport, title: &str) -> String {
    const COLOURS: [&str; 6] = [
        "#555555", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
    ];
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 60.0, 50.0, 40.0, 150.0);
    let max_labels = report.run.budget as f64;
    let points = report.curves.iter().flat_map(|c| &c.points);
    let lo = points.clone().map(|p| p.accuracy).fold(1.0, f64::min);
    let hi = points.map(|p| p.accuracy).fold(0.0, f64::max);
    let (lo, hi) = (
        (lo * 20.0).floor() / 20.0,
        ((hi * 20.0).ceil() / 20.0).max(lo + 0.05),
    );
    let x = |labels: f64| left + labels / max_labels * (w - left - right);
    let y = |acc: f64| h - bottom - (acc - lo) / (hi - lo) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"24\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for i in 0..=4 {
        let acc = lo + (hi - lo) * f64::from(i) / 4.0;
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#dddddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{acc:.2}</text>\n",
            w - right,
            y(acc),
            y(acc),
            left - 6.0,
            y(acc) + 4.0
        );
    }
    for i in 0..=4 {
        let labels = max_labels * f64::from(i) / 4.0;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{labels:.0}</text>\n",
            x(labels),
            h - bottom + 18.0
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">labels bought</text>\n\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" \
         text-anchor=\"middle\">test accuracy</text>\n",
        (left + w - right) / 2.0,
        h - 10.0,
        h / 2.0,
        h / 2.0
    );
    for (i, c) in report.curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.labels as f64), y(p.accuracy)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>\n",
            path.join(" "),
            w - right + 10.0,
            top + 18.0 * i as f64 + 10.0,
            c.strategy.name()
        );
    }
    svg + "</svg>\n"
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(labels: usize, accuracy: f64) -> CurvePoint {
        CurvePoint {
            labels,
            accuracy,
            macro_f1: accuracy,
        }
    }

    #[test]
    fn curves_are_summarised_and_matched_against_random() {
        let random = vec![
            vec![point(10, 0.5), point(20, 0.6), point(30, 0.7)],
            vec![point(10, 0.5), point(20, 0.6), point(30, 0.8)],
        ];
        let margin = vec![vec![point(10, 0.5), point(20, 0.76), point(30, 0.8)]];
        let mut curves: Vec<StrategyCurve> =
            [(Strategy::Random, random), (Strategy::Margin, margin)]
                .into_iter()
                .map(|(strategy, runs)| StrategyCurve {
                    strategy,
                    points: summarise(&runs),
                    labels_to_match_random: None,
                    runs,
                })
                .collect();
        match_random(&mut curves);
        let last = &curves[0].points[2];
        assert!((last.accuracy - 0.75).abs() < 1e-12 && (last.accuracy_std - 0.05).abs() < 1e-12);
        assert_eq!(curves[0].labels_to_match_random, Some(30));
        assert_eq!(curves[1].labels_to_match_random, Some(20));
        let report = CurvesReport {
            pool: 100,
            test: 50,
            classes: 2,
            seeds: vec![1, 2],
            run: SimulateSpec {
                strategy: Strategy::Random,
                initial: 10,
                step: 10,
                budget: 30,
                c: 1.0,
                seed: 0,
            },
            curves,
        };
        let svg = curves_svg(&report, "a <test>");
        assert!(svg.starts_with("<svg") && svg.contains("a &lt;test&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
