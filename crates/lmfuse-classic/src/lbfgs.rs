//! Limited-memory BFGS for smooth convex objectives.
//!
//! Written here rather than taken from a crate: the heads need f64 precision on flat parameter
//! vectors with a caller-supplied fused loss-and-gradient, and nothing else; the Rust
//! optimisation crates checked (argmin) bring generic machinery that costs more build time
//! than these ~100 lines.

use rayon::prelude::*;

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

/// Vectors at least this long are worked on by the rayon pool, in fixed chunks so that every
/// sum is added up in the same order whatever the threads do (same data, same result).
const PARALLEL_LEN: usize = 1 << 16;
const CHUNK: usize = 1 << 14;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let serial = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    if a.len() < PARALLEL_LEN {
        return serial(a, b);
    }
    let parts: Vec<f64> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| serial(a, b))
        .collect();
    parts.iter().sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// `out[i] = f(out[i], a[i], b[i])` over the whole vectors, in parallel when long.
fn zip_apply(out: &mut [f64], a: &[f64], b: &[f64], f: impl Fn(f64, f64, f64) -> f64 + Sync) {
    let serial = |out: &mut [f64], a: &[f64], b: &[f64]| {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(*o, x, y);
        }
    };
    if out.len() < PARALLEL_LEN {
        return serial(out, a, b);
    }
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| serial(o, a, b));
}

/// The last `memory` steps `s` and gradient changes `y`, in buffers reused once full (each
/// is as long as the parameters: allocating a pair per iteration churns gigabytes on wide
/// models).
struct History {
    pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)>,
    memory: usize,
}

impl History {
    /// Records `s = x_new - x` and `y = g_new - g` when `s·y` is positive (curvature).
    fn push(&mut self, x_new: &[f64], x: &[f64], g_new: &[f64], g: &[f64]) {
        if self.memory == 0 {
            return;
        }
        let (mut s, mut y) = match self.pairs.len() == self.memory {
            true => {
                let (s, y, _) = self.pairs.pop_front().expect("full");
                (s, y)
            }
            false => (vec![0.0; x.len()], vec![0.0; x.len()]),
        };
        zip_apply(&mut s, x_new, x, |_, a, b| a - b);
        zip_apply(&mut y, g_new, g, |_, a, b| a - b);
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            self.pairs.push_back((s, y, 1.0 / sy));
        }
    }

    /// `dir = -H g` by the two-loop recursion.
    fn direction(&self, g: &[f64], dir: &mut [f64]) {
        dir.copy_from_slice(g);
        let mut alpha = vec![0.0; self.pairs.len()];
        for (i, (s, y, rho)) in self.pairs.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, dir);
            let a = alpha[i];
            zip_apply(dir, y, y, |d, y, _| d - a * y);
        }
        let gamma = match self.pairs.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / max_abs(g).max(1.0),
        };
        zip_apply(dir, g, g, |d, _, _| d * gamma);
        for (i, (s, y, rho)) in self.pairs.iter().enumerate() {
            let beta = rho * dot(y, dir);
            let a = alpha[i];
            zip_apply(dir, s, s, |d, s, _| d + s * (a - beta));
        }
        zip_apply(dir, g, g, |d, _, _| -d);
    }
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
    let mut history = History {
        pairs: std::collections::VecDeque::new(),
        memory: opts.memory,
    };
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
        history.direction(&g, &mut dir);
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            history.pairs.clear();
            zip_apply(&mut dir, &g, &g, |_, gi, _| -gi);
            slope = dot(&g, &dir);
        }
        // Backtracking line search with the Armijo condition.
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            zip_apply(&mut x_new, &x, &dir, |_, x, d| x + step * d);
            let v = f(&x_new, &mut g_new);
            if v.is_finite() && v <= value + 1e-4 * step * slope {
                accepted = true;
                history.push(&x_new, &x, &g_new, &g);
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
