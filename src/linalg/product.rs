//! The dense products of the certificates and the optimiser, through
//! matrixmultiply's strided dgemm.

use nalgebra::DMatrix;

/// Products below this many multiply-adds run on one thread.
const PARALLEL_WORK: usize = 1 << 24;

/// op(A)·op(B), op = transpose when the flag is set, through matrixmultiply's
/// strided dgemm: the transposes are stride swaps, not copies (nalgebra
/// would copy, and its `tr_mul` is a dot-product loop). Large products are
/// split by rows of the output over rayon's pool; every chunk is the same
/// dgemm on a row offset, so each entry is summed in the same order.
pub(crate) fn product(a: &DMatrix<f64>, ta: bool, b: &DMatrix<f64>, tb: bool) -> DMatrix<f64> {
    use rayon::prelude::*;
    let (m, k) = if ta {
        (a.ncols(), a.nrows())
    } else {
        (a.nrows(), a.ncols())
    };
    let (kb, n) = if tb {
        (b.ncols(), b.nrows())
    } else {
        (b.nrows(), b.ncols())
    };
    assert_eq!(k, kb, "inner dimensions agree");
    let mut out = DMatrix::zeros(m, n);
    // Column-major: (i, j) at i + j·nrows, so (row, column) strides are
    // (1, nrows), swapped for the transpose.
    let strides = |x: &DMatrix<f64>, t: bool| {
        let r = x.nrows() as isize;
        if t {
            (r, 1)
        } else {
            (1, r)
        }
    };
    let (rsa, csa) = strides(a, ta);
    let (rsb, csb) = strides(b, tb);
    let chunks = if m * k * n < PARALLEL_WORK {
        1
    } else {
        (4 * rayon::current_num_threads())
            .min(m.div_ceil(64))
            .max(1)
    };
    let rows = m.div_ceil(chunks.max(1)).max(1);
    // Addresses as integers so the closure is Send; chunks write disjoint rows.
    let (pa, pb, po) = (
        a.as_ptr() as usize,
        b.as_ptr() as usize,
        out.as_mut_ptr() as usize,
    );
    (0..chunks).into_par_iter().for_each(|c| {
        let i0 = c * rows;
        if i0 >= m {
            return;
        }
        let len = rows.min(m - i0);
        // SAFETY: the pointers address live matrices whose extents match the
        // dimensions and strides given; row chunk [i0, i0 + len) of op(A)
        // starts i0·rsa elements in, of `out` i0 elements in; `out` aliases
        // neither input and the chunks' output rows are disjoint.
        unsafe {
            matrixmultiply::dgemm(
                len,
                k,
                n,
                1.0,
                (pa as *const f64).offset(i0 as isize * rsa),
                rsa,
                csa,
                pb as *const f64,
                rsb,
                csb,
                0.0,
                (po as *mut f64).add(i0),
                1,
                m as isize,
            );
        }
    });
    out
}
