//! Temperature scaling (Guo et al., 2017): class probabilities `p` become `softmax(log p / T)`
//! with one temperature `T` fit on held-out (out-of-fold) probabilities by minimising their log
//! loss. The most probable class of a row never changes, only how sure the model says it is.

/// Probabilities are clamped to at least this before the log (votes give exact zeros).
const FLOOR: f32 = 1e-7;
/// The inverse temperatures searched: T from 1/20 to 20.
const BETA_RANGE: (f64, f64) = (0.05, 20.0);

/// Scales the rows of `proba` (`rows × k`) by temperature `t`, in place.
pub fn apply_temperature(proba: &mut [f32], k: usize, t: f32) {
    let beta = 1.0 / f64::from(t);
    for row in proba.chunks_exact_mut(k) {
        scale_row(row, beta);
    }
}

/// `row` ← softmax(β · log row), in f64 for the sums.
fn scale_row(row: &mut [f32], beta: f64) {
    let logits: Vec<f64> = row
        .iter()
        .map(|&p| beta * f64::from(p.max(FLOOR)).ln())
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    for (p, l) in row.iter_mut().zip(&logits) {
        *p = ((l - max).exp() / sum) as f32;
    }
}

/// Mean log loss of `proba` on classes `y` after scaling by the inverse temperature `beta`.
fn log_loss(proba: &[f32], y: &[usize], k: usize, beta: f64) -> f64 {
    let mut row = vec![0f32; k];
    let total: f64 = proba
        .chunks_exact(k)
        .zip(y)
        .map(|(p, &c)| {
            row.copy_from_slice(p);
            scale_row(&mut row, beta);
            -f64::from(row[c].max(FLOOR)).ln()
        })
        .sum();
    total / y.len().max(1) as f64
}

/// The temperature that minimises the log loss of `proba` (`rows × k`) on `y`, and that log
/// loss. The loss is convex in 1/T, so a golden-section search over 1/T finds the minimum; T = 1
/// (no change) is kept unless another is strictly better. Empty input gives T = 1.
pub fn fit_temperature(proba: &[f32], y: &[usize], k: usize) -> (f32, f64) {
    let at_one = log_loss(proba, y, k, 1.0);
    if y.is_empty() {
        return (1.0, at_one);
    }
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut lo, mut hi) = (BETA_RANGE.0.ln(), BETA_RANGE.1.ln());
    let f = |x: f64| log_loss(proba, y, k, x.exp());
    let (mut a, mut b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..40 {
        if fa < fb {
            hi = b;
            (b, fb) = (a, fa);
            a = hi - phi * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            (a, fa) = (b, fb);
            b = lo + phi * (hi - lo);
            fb = f(b);
        }
    }
    let (beta, loss) = if fa < fb { (a, fa) } else { (b, fb) };
    if loss < at_one {
        ((1.0 / beta.exp()) as f32, loss)
    } else {
        (1.0, at_one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_keeps_the_top_class_and_sums_to_one() {
        let mut p = vec![0.7, 0.2, 0.1, 0.1, 0.1, 0.8];
        apply_temperature(&mut p, 3, 2.0);
        for row in p.chunks_exact(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(p[0] > p[1] && p[0] < 0.7, "{p:?}");
        assert!(p[5] > p[3] && p[5] < 0.8, "{p:?}");
        let mut same = vec![0.7, 0.2, 0.1];
        apply_temperature(&mut same, 3, 1.0);
        assert!(same
            .iter()
            .zip([0.7, 0.2, 0.1])
            .all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn overconfident_probabilities_get_a_temperature_above_one() {
        // Always 0.99 on the top class, right only 70% of the time.
        let (mut proba, mut y) = (Vec::new(), Vec::new());
        for i in 0..100 {
            proba.extend([0.99, 0.01]);
            y.push(usize::from(i % 10 >= 7));
        }
        let (t, loss) = fit_temperature(&proba, &y, 2);
        assert!(t > 1.5, "T = {t}");
        assert!(loss < log_loss(&proba, &y, 2, 1.0));
        // The best T makes the top class's probability about its accuracy.
        let mut p = proba.clone();
        apply_temperature(&mut p, 2, t);
        assert!((p[0] - 0.7).abs() < 0.02, "{}", p[0]);
    }

    #[test]
    fn calibrated_or_empty_input_keeps_one() {
        let (t, _) = fit_temperature(&[], &[], 3);
        assert_eq!(t, 1.0);
        // 75% right at 0.75: already calibrated, T stays near 1.
        let (mut proba, mut y) = (Vec::new(), Vec::new());
        for i in 0..400 {
            proba.extend([0.75, 0.25]);
            y.push(usize::from(i % 4 == 3));
        }
        let (t, _) = fit_temperature(&proba, &y, 2);
        assert!((t - 1.0).abs() < 0.01, "T = {t}");
    }
}
