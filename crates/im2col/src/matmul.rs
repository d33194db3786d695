//! The one place convkit calls the `gemm` crate.
//!
//! `gemm::gemm` computes dst := alpha*dst + beta*lhs*rhs (alpha and beta swapped against
//! BLAS) and takes each matrix's column stride before its row stride. This wrapper takes
//! slices and (row, column) strides in the usual order, checks every extent, and keeps
//! the raw-pointer call in one audited block.

use convkit_tensor::{Error, Result};

/// A strided matrix operand: `rows` x `cols`, element (r, c) at `r * row_stride + c * col_stride`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixShape {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between consecutive rows, in elements.
    pub row_stride: usize,
    /// Distance between consecutive columns, in elements.
    pub col_stride: usize,
}

impl MatrixShape {
    /// A contiguous row-major matrix.
    pub const fn row_major(rows: usize, cols: usize) -> Self {
        MatrixShape { rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Checks that a buffer of `len` elements holds every element.
    fn check(&self, what: &str, len: usize) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (self.cols - 1).checked_mul(self.col_stride).and_then(|c| r.checked_add(c)))
            .ok_or_else(|| Error::overflow(format!("{what} matrix extent {self:?}")))?;
        if last >= len || self.row_stride > isize::MAX as usize || self.col_stride > isize::MAX as usize {
            return Err(Error::mismatch(
                format!("{what} buffer length for {self:?}"),
                format!("more than {last}"),
                len,
            ));
        }
        Ok(())
    }

    /// Checks that no two elements share an index, which a destination written from
    /// several threads needs: the inner axis (the smaller stride) must step by at least
    /// 1 and the outer axis past the whole inner extent. Strides that interleave without
    /// colliding are refused too: the check is sufficient, not necessary.
    fn check_distinct(&self, what: &str) -> Result<()> {
        let (inner, outer) = if self.col_stride <= self.row_stride {
            ((self.col_stride, self.cols), (self.row_stride, self.rows))
        } else {
            ((self.row_stride, self.rows), (self.col_stride, self.cols))
        };
        let inner_ok = inner.1 <= 1 || inner.0 >= 1;
        let outer_ok = outer.1 <= 1 || inner.0.checked_mul(inner.1).is_some_and(|extent| outer.0 >= extent);
        if inner_ok && outer_ok {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "{what} matrix {self:?} addresses some elements twice: its rows or columns overlap"
        )))
    }
}

/// A matrix operand: a slice and the shape that addresses it.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// How `data` is addressed.
    pub shape: MatrixShape,
}

/// The destination of [`matmul`].
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The elements, written by [`matmul`].
    pub data: &'a mut [f32],
    /// How `data` is addressed; no two elements may share an index.
    pub shape: MatrixShape,
}

/// dst = lhs * rhs, or dst += lhs * rhs when `accumulate`; dst is m x n, lhs m x k, rhs
/// k x n. Runs on the current rayon pool's threads when `parallel`.
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool, parallel: bool) -> Result<()> {
    let (dst, dst_shape) = (dst.data, dst.shape);
    let (lhs, lhs_shape) = (lhs.data, lhs.shape);
    let (rhs, rhs_shape) = (rhs.data, rhs.shape);
    let (m, k, n) = (lhs_shape.rows, lhs_shape.cols, rhs_shape.cols);
    if rhs_shape.rows != k || dst_shape.rows != m || dst_shape.cols != n {
        return Err(Error::mismatch(
            "matmul operand shapes (dst m x n, lhs m x k, rhs k x n)",
            format!("dst {m}x{n}, rhs {k}x{n}"),
            format!("dst {}x{}, rhs {}x{}", dst_shape.rows, dst_shape.cols, rhs_shape.rows, rhs_shape.cols),
        ));
    }
    dst_shape.check("dst", dst.len())?;
    dst_shape.check_distinct("dst")?;
    lhs_shape.check("lhs", lhs.len())?;
    rhs_shape.check("rhs", rhs.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * dst_shape.row_stride + c * dst_shape.col_stride] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let parallelism = if parallel && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element each operand's shape addresses lies inside its slice (checked
    // above), strides fit in isize, `dst` is borrowed mutably so it aliases neither input,
    // and `check_distinct` proved that no two destination elements share an index, so the
    // threads gemm writes from never write the same memory.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_shape.col_stride as isize,
            dst_shape.row_stride as isize,
            accumulate, // read_dst
            lhs.as_ptr(),
            lhs_shape.col_stride as isize,
            lhs_shape.row_stride as isize,
            rhs.as_ptr(),
            rhs_shape.col_stride as isize,
            rhs_shape.row_stride as isize,
            1.0, // alpha: scales dst
            1.0, // beta: scales lhs * rhs
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
