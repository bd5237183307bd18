//! The Cholesky factor L Lᵀ = H_FF of an active-set method's free
//! variables, updated as variables enter (a forward substitution) and leave
//! (deleting a row, then a stable rank-one update of the trailing block):
//! O(|F|²) per change instead of O(|F|³) per factorisation.

use super::product::product;
use super::CLAMPED_PIVOT;
use nalgebra::{DMatrix, DVector};

/// The Cholesky factor L Lᵀ = H_FF of the free variables F, rows and
/// columns in `order` (the order they were freed). Stored in the top-left
/// |F|×|F| corner of a matrix that doubles as F grows, column-major, so
/// that substitutions run down contiguous columns.
pub(super) struct Factor {
    pub(super) order: Vec<usize>,
    pub(super) l: DMatrix<f64>,
    pub(super) ridge: f64,
}

impl Factor {
    pub(super) fn new(nv: usize, ridge: f64) -> Self {
        Self {
            order: Vec::with_capacity(nv),
            l: DMatrix::zeros(0, 0),
            ridge,
        }
    }

    /// A fresh factor of `hff` (no ridge) for the variables `fi`, if every
    /// pivot keeps a fair share of its diagonal.
    pub(super) fn exact(hff: &DMatrix<f64>, fi: &[usize]) -> Option<Self> {
        let ch = hff
            .clone()
            .cholesky()
            .filter(|ch| well_conditioned(ch, hff))?;
        Some(Self {
            order: fi.to_vec(),
            l: ch.unpack(),
            ridge: 0.0,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// The position of the first pivot that keeps at most the share
    /// `share` of its variable's diagonal `diag(i)` (or sits near the
    /// ridge), if any.
    pub(super) fn thin_pivot(&self, diag: impl Fn(usize) -> f64, share: f64) -> Option<usize> {
        self.order.iter().enumerate().position(|(k, &i)| {
            let p = self.l[(k, k)].powi(2);
            p <= share * diag(i) || p <= 100.0 * self.ridge
        })
    }

    /// x ← L⁻¹ x.
    pub(super) fn lower(&self, x: &mut [f64]) {
        for j in 0..x.len() {
            x[j] /= self.l[(j, j)];
            let xj = x[j];
            let col = self.l.column(j);
            for i in j + 1..x.len() {
                x[i] -= col[i] * xj;
            }
        }
    }

    /// x ← L⁻ᵀ x.
    pub(super) fn upper(&self, x: &mut [f64]) {
        for j in (0..x.len()).rev() {
            let col = self.l.column(j);
            let s: f64 = (j + 1..x.len()).map(|i| col[i] * x[i]).sum();
            x[j] = (x[j] - s) / self.l[(j, j)];
        }
    }

    /// Appends the column `i` whose entries against `order` are `row` and
    /// whose diagonal is `diag` (at most `nmax` columns ever live).
    pub(super) fn append(&mut self, i: usize, mut row: Vec<f64>, diag: f64, nmax: usize) {
        let k = self.len();
        self.lower(&mut row);
        let d = diag - row.iter().map(|v| v * v).sum::<f64>();
        if k == self.l.nrows() {
            // Storage doubles as F grows: |F|² memory, not N².
            let cap = (2 * k).max(16).min(nmax);
            let old = std::mem::replace(&mut self.l, DMatrix::zeros(0, 0));
            self.l = old.resize(cap, cap, 0.0);
        }
        for (j, v) in row.into_iter().enumerate() {
            self.l[(k, j)] = v;
        }
        self.l[(k, k)] = d.max(self.ridge).max(f64::MIN_POSITIVE).sqrt();
        self.order.push(i);
    }

    /// Fixes variable i: deletes its row and column; the trailing block
    /// L₃₃ then needs L₃₃' L₃₃'ᵀ = L₃₃ L₃₃ᵀ + l₃₂ l₃₂ᵀ, a rank-one update by
    /// Givens-like rotations (always stable, unlike a downdate).
    pub(super) fn remove(&mut self, i: usize) {
        let Some(p) = self.order.iter().position(|&j| j == i) else {
            return;
        };
        let n = self.len();
        let mut x: Vec<f64> = (p + 1..n).map(|r| self.l[(r, p)]).collect();
        for c in 0..n - 1 {
            let src_c = if c < p { c } else { c + 1 };
            for r in (c.max(p))..n - 1 {
                self.l[(r, c)] = self.l[(r + 1, src_c)];
            }
        }
        for (k, c) in (p..n - 1).enumerate() {
            let lkk = self.l[(c, c)];
            let r = lkk.hypot(x[k]);
            let (cs, sn) = (r / lkk, x[k] / lkk);
            self.l[(c, c)] = r;
            for (t, row) in (c + 1..n - 1).enumerate() {
                let lik = (self.l[(row, c)] + sn * x[k + 1 + t]) / cs;
                x[k + 1 + t] = cs * x[k + 1 + t] - sn * lik;
                self.l[(row, c)] = lik;
            }
        }
        self.order.remove(p);
    }

    /// The subproblem in the factor's own coordinates: minimise
    /// ½yᵀ(LLᵀ)y − tᵀy subject to r_pᵀy = b_p for the working rows r_p
    /// (each given in `order`): y = (LLᵀ)⁻¹(t − Rᵀμ) with μ from the Schur
    /// complement S μ = R (LLᵀ)⁻¹ t − b, S = R (LLᵀ)⁻¹ Rᵀ. `None` if S is
    /// ill-conditioned.
    pub(super) fn solve_rows(
        &self,
        mut t: Vec<f64>,
        rows: &[Vec<f64>],
        b: &[f64],
    ) -> Option<(Vec<f64>, Vec<f64>)> {
        self.lower(&mut t);
        let nw = rows.len();
        if nw == 0 || self.order.is_empty() {
            self.upper(&mut t);
            return Some((t, vec![0.0; nw]));
        }
        let nf = self.order.len();
        let mut ys = DMatrix::zeros(nf, nw);
        for (p, row) in rows.iter().enumerate() {
            let mut y = row.clone();
            self.lower(&mut y);
            ys.set_column(p, &DVector::from_vec(y));
        }
        let s = product(&ys, true, &ys, false);
        let tv = DVector::from_column_slice(&t);
        let rhs = DVector::from_fn(nw, |p, _| ys.column(p).dot(&tv) - b[p]);
        let mu = s
            .clone()
            .cholesky()
            .filter(|ch| well_conditioned(ch, &s))?
            .solve(&rhs);
        let ymu = &ys * &mu;
        t.iter_mut().zip(ymu.iter()).for_each(|(ti, yi)| *ti -= yi);
        self.upper(&mut t);
        Some((t, mu.as_slice().to_vec()))
    }
}

/// The KKT matrix [[H_FF, Rᵀ], [R, 0]] and right-hand side [g_F; b_W] for
/// the working rows R (each over the free variables) and their b_W.
pub(super) fn kkt_system(
    hff: &DMatrix<f64>,
    gf: &DVector<f64>,
    rows: &[Vec<f64>],
    bw: &[f64],
) -> (DMatrix<f64>, DVector<f64>) {
    let (nf, nw) = (hff.nrows(), rows.len());
    let dim = nf + nw;
    let mut k = DMatrix::zeros(dim, dim);
    k.view_mut((0, 0), (nf, nf)).copy_from(hff);
    let mut rhs = DVector::zeros(dim);
    rhs.rows_mut(0, nf).copy_from(gf);
    for (t, row) in rows.iter().enumerate() {
        for (s, &v) in row.iter().enumerate() {
            k[(nf + t, s)] = v;
            k[(s, nf + t)] = v;
        }
        rhs[nf + t] = bw[t];
    }
    (k, rhs)
}

/// A Cholesky factor whose pivots all keep more than [`CLAMPED_PIVOT`] of
/// their diagonal (a tiny pivot means H_FF is numerically singular:
/// duplicated columns).
pub(super) fn well_conditioned(
    ch: &nalgebra::Cholesky<f64, nalgebra::Dyn>,
    h: &DMatrix<f64>,
) -> bool {
    let l = ch.l_dirty();
    (0..h.nrows()).all(|i| l[(i, i)] * l[(i, i)] > CLAMPED_PIVOT * h[(i, i)])
}
