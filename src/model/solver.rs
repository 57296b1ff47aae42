//! The multinomial logistic regression's optimisation: the same objective as
//! linfa-logistic (cross-entropy summed over rows plus `alpha / 2 * |W|^2`, the
//! intercept not penalised), divided by the row count so that the gradient
//! tolerance means the same at any data size, minimised by L-BFGS.
//!
//! Why not linfa's own solver: it evaluates the cost and the gradient separately
//! (three `n x d x k` products in f64 per line-search step), and its gradient
//! tolerance applies to the summed loss, so at thousands of rows it never converges
//! and always runs `max_iterations`. Here one pass gives both (two products, in f32
//! with f64 accumulation across row blocks), sparse rows (the n-gram features) cost
//! per non-zero, row blocks run on several threads, and a fit can start from another
//! fit's weights (the previous alpha of a regularisation path). The result is stored
//! as linfa-logistic's fitted model, so the registry format does not change.

use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};

/// Rows per block: the unit of work shared between threads. Fixed, so the sums
/// (and the fitted weights) do not depend on the thread count.
const BLOCK_ROWS: usize = 1024;
/// Feature rows with at most this share of non-zeros are handled as sparse rows.
const SPARSE_DENSITY: f64 = 0.1;
/// L-BFGS memory (as linfa-logistic).
const MEMORY: usize = 10;
/// Armijo sufficient-decrease constant of the backtracking line search.
const ARMIJO: f64 = 1e-4;
/// Halvings of the step before a line search gives up.
const MAX_BACKTRACKS: usize = 40;

/// Feature rows, stored the way their products are cheapest.
enum Rows<'a> {
    Dense(ArrayView2<'a, f32>),
    /// Compressed sparse rows: row `r` is `indices/values[starts[r]..starts[r + 1]]`.
    Sparse {
        starts: Vec<usize>,
        indices: Vec<usize>,
        values: Vec<f32>,
        columns: usize,
    },
}

impl<'a> Rows<'a> {
    fn new(x: ArrayView2<'a, f32>) -> Self {
        let nonzero = x.iter().filter(|&&v| v != 0.0).count();
        if (nonzero as f64) > SPARSE_DENSITY * x.len() as f64 {
            return Rows::Dense(x);
        }
        let mut starts = Vec::with_capacity(x.nrows() + 1);
        let mut indices = Vec::with_capacity(nonzero);
        let mut values = Vec::with_capacity(nonzero);
        starts.push(0);
        for row in x.rows() {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    indices.push(j);
                    values.push(v);
                }
            }
            starts.push(indices.len());
        }
        Rows::Sparse {
            starts,
            indices,
            values,
            columns: x.ncols(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::Dense(x) => x.nrows(),
            Rows::Sparse { starts, .. } => starts.len() - 1,
        }
    }

    fn columns(&self) -> usize {
        match self {
            Rows::Dense(x) => x.ncols(),
            Rows::Sparse { columns, .. } => *columns,
        }
    }

    /// `X[rows] . W` for a block of rows.
    fn scores(&self, rows: std::ops::Range<usize>, w: &Array2<f32>) -> Array2<f32> {
        match self {
            Rows::Dense(x) => x.slice_axis(Axis(0), Slice::from(rows)).dot(w),
            Rows::Sparse {
                starts,
                indices,
                values,
                ..
            } => {
                let mut out = Array2::<f32>::zeros((rows.len(), w.ncols()));
                for (mut out_row, r) in out.rows_mut().into_iter().zip(rows) {
                    for e in starts[r]..starts[r + 1] {
                        out_row.scaled_add(values[e], &w.row(indices[e]));
                    }
                }
                out
            }
        }
    }

    /// `X[rows]^T . D` for a block of rows.
    fn transpose_times(&self, rows: std::ops::Range<usize>, d: &Array2<f32>) -> Array2<f32> {
        match self {
            Rows::Dense(x) => x.slice_axis(Axis(0), Slice::from(rows)).t().dot(d),
            Rows::Sparse {
                starts,
                indices,
                values,
                columns,
            } => {
                let mut out = Array2::<f32>::zeros((*columns, d.ncols()));
                for (d_row, r) in d.rows().into_iter().zip(rows) {
                    for e in starts[r]..starts[r + 1] {
                        out.row_mut(indices[e]).scaled_add(values[e], &d_row);
                    }
                }
                out
            }
        }
    }
}

/// The objective over one data set: rows, class index (`0..classes`) of each row,
/// and the L2 strength.
pub struct Objective<'a> {
    rows: Rows<'a>,
    targets: Vec<usize>,
    classes: usize,
    alpha: f64,
    threads: usize,
}

/// What one fit did: the work is noise-free, unlike its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FitWork {
    pub fits: u64,
    pub iterations: u64,
    /// Loss-and-gradient evaluations (each two passes over the rows).
    pub evaluations: u64,
    /// Fits that stopped at `max_iterations` (the others reached the tolerance, or
    /// a point where f32 arithmetic finds no further decrease).
    pub at_limit: u64,
}

impl std::ops::AddAssign for FitWork {
    fn add_assign(&mut self, o: Self) {
        self.fits += o.fits;
        self.iterations += o.iterations;
        self.evaluations += o.evaluations;
        self.at_limit += o.at_limit;
    }
}

impl<'a> Objective<'a> {
    /// `targets[r]` must be below `classes`; `threads` share the row blocks.
    pub fn new(
        x: ArrayView2<'a, f32>,
        targets: Vec<usize>,
        classes: usize,
        alpha: f64,
        threads: usize,
    ) -> Self {
        Self {
            rows: Rows::new(x),
            targets,
            classes,
            alpha,
            threads: threads.max(1),
        }
    }

    /// Parameters per class: one weight per feature, then the intercept.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows.columns() + 1, self.classes)
    }

    /// Loss and gradient of one block of rows (summed, not yet divided by `n`).
    fn block(
        &self,
        rows: std::ops::Range<usize>,
        w: &Array2<f32>,
        b: &[f32],
    ) -> (f64, Array2<f32>) {
        let mut scores = self.rows.scores(rows.clone(), w);
        let mut loss = 0.0f64;
        for (mut row, r) in scores.rows_mut().into_iter().zip(rows.clone()) {
            row.iter_mut().zip(b).for_each(|(v, &bi)| *v += bi);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let target = self.targets[r];
            let target_score = row[target] - max;
            let mut sum = 0.0f32;
            row.iter_mut().for_each(|v| {
                *v = (*v - max).exp();
                sum += *v;
            });
            loss += f64::from(sum.ln()) - f64::from(target_score);
            let inv = sum.recip();
            row.iter_mut().for_each(|v| *v *= inv);
            row[target] -= 1.0;
        }
        // `scores` now holds softmax - onehot.
        let mut grad = Array2::<f32>::zeros((w.nrows() + 1, w.ncols()));
        grad.slice_axis_mut(Axis(0), Slice::from(..w.nrows()))
            .assign(&self.rows.transpose_times(rows, &scores));
        grad.row_mut(w.nrows()).assign(&scores.sum_axis(Axis(0)));
        (loss, grad)
    }

    /// Mean loss plus `alpha / (2n) |W|^2`, and its gradient, at `params`
    /// (`shape()`, flattened row-major).
    pub fn evaluate(&self, params: &Array1<f64>) -> (f64, Array1<f64>) {
        let (d1, k) = self.shape();
        let d = d1 - 1;
        let p = params
            .view()
            .into_shape_with_order((d1, k))
            .expect("parameters have the objective's shape");
        let w32 = p.slice_axis(Axis(0), Slice::from(..d)).mapv(|v| v as f32);
        let b32: Vec<f32> = p.row(d).iter().map(|&v| v as f32).collect();
        let n = self.rows.len();
        let blocks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(BLOCK_ROWS)
            .map(|start| start..(start + BLOCK_ROWS).min(n))
            .collect();
        let threads = self.threads.min(blocks.len()).max(1);
        let mut parts: Vec<(usize, (f64, Array2<f32>))> = if threads == 1 {
            blocks
                .iter()
                .enumerate()
                .map(|(i, r)| (i, self.block(r.clone(), &w32, &b32)))
                .collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (blocks, w32, b32) = (&blocks, &w32, &b32);
                        scope.spawn(move || {
                            (t..blocks.len())
                                .step_by(threads)
                                .map(|i| (i, self.block(blocks[i].clone(), w32, b32)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("a gradient thread panicked"))
                    .collect()
            })
        };
        // Sum in block order: the same result on any thread count.
        parts.sort_by_key(|(i, _)| *i);
        let scale = 1.0 / n.max(1) as f64;
        let ridge = self.alpha * scale;
        let mut loss = 0.0;
        let mut grad = Array1::<f64>::zeros(d1 * k);
        for (_, (l, g)) in parts {
            loss += l;
            grad.iter_mut()
                .zip(g.iter())
                .for_each(|(a, &b)| *a += f64::from(b));
        }
        grad.mapv_inplace(|v| v * scale);
        let weights = params.slice_axis(Axis(0), Slice::from(..d * k));
        grad.slice_axis_mut(Axis(0), Slice::from(..d * k))
            .scaled_add(ridge, &weights);
        let loss = loss * scale + 0.5 * ridge * weights.dot(&weights);
        (loss, grad)
    }
}

/// Limits of one fit.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    pub max_iterations: u64,
    /// Stop when the largest gradient component of the mean loss falls below this.
    pub gradient_tolerance: f64,
}

/// Minimises the objective by L-BFGS (two-loop recursion, backtracking Armijo line
/// search) from `start` (flattened `shape()`), or from zeros.
pub fn minimise(
    objective: &Objective<'_>,
    start: Option<Array1<f64>>,
    stopping: Stopping,
) -> (Array1<f64>, FitWork) {
    let (d1, k) = objective.shape();
    let mut x = start
        .filter(|s| s.len() == d1 * k && s.iter().all(|v| v.is_finite()))
        .unwrap_or_else(|| Array1::zeros(d1 * k));
    let (mut f, mut g) = objective.evaluate(&x);
    let mut work = FitWork {
        fits: 1,
        evaluations: 1,
        ..FitWork::default()
    };
    let mut history: std::collections::VecDeque<(Array1<f64>, Array1<f64>, f64)> =
        std::collections::VecDeque::with_capacity(MEMORY);
    let largest = |v: &Array1<f64>| v.iter().fold(0.0f64, |m, &a| m.max(a.abs()));
    let mut done = largest(&g) <= stopping.gradient_tolerance;
    while !done {
        if work.iterations == stopping.max_iterations {
            work.at_limit = 1;
            break;
        }
        work.iterations += 1;
        let direction = two_loop(&g, &history);
        let mut slope = g.dot(&direction);
        let direction = if slope < 0.0 {
            direction
        } else {
            // Not a descent direction (should not happen on a convex loss): restart.
            history.clear();
            slope = -g.dot(&g);
            -&g
        };
        let mut step = if history.is_empty() {
            (1.0 / largest(&g).max(1e-12)).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..MAX_BACKTRACKS {
            let candidate = &x + &(&direction * step);
            let (fc, gc) = objective.evaluate(&candidate);
            work.evaluations += 1;
            if fc.is_finite() && fc <= f + ARMIJO * step * slope {
                accepted = Some((candidate, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((candidate, fc, gc)) = accepted else {
            break; // No decrease left at f32 precision: as good as it gets.
        };
        let s = &candidate - &x;
        let y = &gc - &g;
        let sy = s.dot(&y);
        if sy > 1e-12 * s.dot(&s).sqrt() * y.dot(&y).sqrt() {
            if history.len() == MEMORY {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
        let decrease = f - fc;
        (x, f, g) = (candidate, fc, gc);
        done = largest(&g) <= stopping.gradient_tolerance || decrease <= 1e-12 * f.abs().max(1e-12);
    }
    (x, work)
}

/// `-H g` with the inverse-Hessian approximation of the stored pairs.
fn two_loop(
    g: &Array1<f64>,
    history: &std::collections::VecDeque<(Array1<f64>, Array1<f64>, f64)>,
) -> Array1<f64> {
    let mut q = g.clone();
    let mut alphas = Vec::with_capacity(history.len());
    for (s, y, rho) in history.iter().rev() {
        let a = rho * s.dot(&q);
        q.scaled_add(-a, y);
        alphas.push(a);
    }
    if let Some((s, y, _)) = history.back() {
        q *= s.dot(y) / y.dot(y);
    }
    for ((s, y, rho), a) in history.iter().zip(alphas.into_iter().rev()) {
        let b = rho * y.dot(&q);
        q.scaled_add(a - b, s);
    }
    -q
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn data() -> (Array2<f32>, Vec<usize>) {
        let x = array![
            [1.0f32, 0.0, 0.2],
            [0.9, 0.1, 0.0],
            [0.0, 1.0, 0.1],
            [0.1, 0.8, 0.0],
            [0.0, 0.0, 1.0],
            [0.2, 0.1, 0.9],
            [0.5, 0.5, 0.0],
        ];
        (x, vec![0, 0, 1, 1, 2, 2, 0])
    }

    /// The analytic gradient agrees with central differences of the loss.
    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = data();
        let objective = Objective::new(x.view(), y, 3, 0.7, 1);
        let p = Array1::from_shape_fn(12, |i| ((i * 7 % 5) as f64 - 2.0) / 3.0);
        let (_, g) = objective.evaluate(&p);
        for i in 0..p.len() {
            let h = 1e-3;
            let mut up = p.clone();
            up[i] += h;
            let mut down = p.clone();
            down[i] -= h;
            let numeric = (objective.evaluate(&up).0 - objective.evaluate(&down).0) / (2.0 * h);
            assert!((numeric - g[i]).abs() < 1e-3, "{i}: {numeric} vs {}", g[i]);
        }
    }

    /// Sparse rows, several threads and several blocks give the dense answer.
    #[test]
    fn sparse_threaded_and_dense_agree() {
        let rows = 2500;
        let x = Array2::from_shape_fn((rows, 40), |(r, j)| {
            if (r * 31 + j * 17) % 23 == 0 {
                ((r + j) % 5) as f32 / 5.0
            } else {
                0.0
            }
        });
        let y: Vec<usize> = (0..rows).map(|r| r % 4).collect();
        let sparse = Objective::new(x.view(), y.clone(), 4, 1.0, 3);
        assert!(matches!(sparse.rows, Rows::Sparse { .. }));
        let mut dense = Objective::new(x.view(), y, 4, 1.0, 1);
        dense.rows = Rows::Dense(x.view());
        let p = Array1::from_shape_fn(41 * 4, |i| ((i % 9) as f64 - 4.0) / 10.0);
        let (fs, gs) = sparse.evaluate(&p);
        let (fd, gd) = dense.evaluate(&p);
        assert!((fs - fd).abs() < 1e-5, "{fs} vs {fd}");
        assert!((&gs - &gd).iter().all(|v| v.abs() < 1e-5));
    }

    /// At the minimum the gradient is within the tolerance, and a warm start from
    /// it needs (almost) no work.
    #[test]
    fn converges_and_a_warm_start_is_cheap() {
        let (x, y) = data();
        let objective = Objective::new(x.view(), y, 3, 0.1, 1);
        let stopping = Stopping {
            max_iterations: 500,
            gradient_tolerance: 1e-4,
        };
        let (p, work) = minimise(&objective, None, stopping);
        assert_eq!(work.at_limit, 0, "{work:?}");
        let (_, g) = objective.evaluate(&p);
        assert!(g.iter().all(|v| v.abs() <= 1e-4), "{g}");
        let (_, again) = minimise(&objective, Some(p), stopping);
        assert!(again.iterations <= 1, "{again:?}");
    }
}
