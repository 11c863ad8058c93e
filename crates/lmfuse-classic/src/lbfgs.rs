//! Limited-memory BFGS for smooth convex objectives.
//!
//! Written here rather than taken from a crate: the heads need f64 precision on flat parameter
//! vectors with a caller-supplied fused loss-and-gradient, and nothing else; the Rust
//! optimisation crates checked (argmin) bring generic machinery that costs more build time
//! than these ~100 lines.

/// Stopping rules.
#[derive(Debug, Clone, Copy)]
pub struct LbfgsOptions {
    /// Iterations at most.
    pub max_iter: usize,
    /// Stop when the largest absolute gradient component is at most this.
    pub gtol: f64,
    /// Corrections kept.
    pub memory: usize,
}

/// Where the optimiser stopped.
#[derive(Debug, Clone)]
pub struct LbfgsResult {
    /// Parameters.
    pub x: Vec<f64>,
    /// Objective value at `x`.
    pub value: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the gradient rule was met (else `max_iter` or a failed line search ended it).
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Minimises `f`, which returns the objective at its first argument and writes the gradient
/// into its second, from `x0`.
pub fn minimize(
    f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: Vec<f64>,
    opts: LbfgsOptions,
) -> LbfgsResult {
    minimize_with(f, x0, opts, |_, _| false)
}

/// [`minimize`], calling `stop(iterations, value)` after each step; it ends the run (counted as
/// converged) by returning true, e.g. when the objective has stopped improving.
pub fn minimize_with(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: Vec<f64>,
    opts: LbfgsOptions,
    mut stop: impl FnMut(usize, f64) -> bool,
) -> LbfgsResult {
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut value = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho: Vec<f64> = Vec::new();
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    let mut dir = vec![0.0; n];
    for iter in 0..opts.max_iter {
        if max_abs(&g) <= opts.gtol {
            return LbfgsResult {
                x,
                value,
                iterations: iter,
                converged: true,
            };
        }
        // Two-loop recursion: dir = -H g.
        dir.copy_from_slice(&g);
        let mut alpha = vec![0.0; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            alpha[i] = rho[i] * dot(&s_hist[i], &dir);
            for (d, y) in dir.iter_mut().zip(&y_hist[i]) {
                *d -= alpha[i] * y;
            }
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / max_abs(&g).max(1.0),
        };
        for d in dir.iter_mut() {
            *d *= gamma;
        }
        for i in 0..s_hist.len() {
            let beta = rho[i] * dot(&y_hist[i], &dir);
            for (d, s) in dir.iter_mut().zip(&s_hist[i]) {
                *d += s * (alpha[i] - beta);
            }
        }
        for d in dir.iter_mut() {
            *d = -*d;
        }
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            for (d, gi) in dir.iter_mut().zip(&g) {
                *d = -gi;
            }
            slope = dot(&g, &dir);
        }
        // Backtracking line search with the Armijo condition.
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for i in 0..n {
                x_new[i] = x[i] + step * dir[i];
            }
            let v = f(&x_new, &mut g_new);
            if v.is_finite() && v <= value + 1e-4 * step * slope {
                accepted = true;
                let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 {
                    if s_hist.len() == opts.memory {
                        s_hist.remove(0);
                        y_hist.remove(0);
                        rho.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(y);
                    rho.push(1.0 / sy);
                }
                std::mem::swap(&mut x, &mut x_new);
                std::mem::swap(&mut g, &mut g_new);
                value = v;
                break;
            }
            step *= 0.5;
        }
        if !accepted || stop(iter + 1, value) {
            let converged = accepted || max_abs(&g) <= opts.gtol;
            return LbfgsResult {
                x,
                value,
                iterations: iter + 1,
                converged,
            };
        }
    }
    let converged = max_abs(&g) <= opts.gtol;
    LbfgsResult {
        x,
        value,
        iterations: opts.max_iter,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_rosenbrock_valley() {
        let f = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        let r = minimize(
            f,
            vec![-1.2, 1.0],
            LbfgsOptions {
                max_iter: 500,
                gtol: 1e-8,
                memory: 10,
            },
        );
        assert!(r.converged, "{r:?}");
        assert!(
            (r.x[0] - 1.0).abs() < 1e-5 && (r.x[1] - 1.0).abs() < 1e-5,
            "{r:?}"
        );
    }
}
