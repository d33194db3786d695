use crate::error::{Error, Result};
use bytemuck::{Pod, Zeroable};

/// Byte alignment of every [`AlignedVec`]: one cache line, one AVX-512 register.
pub const ALIGN: usize = 64;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable-once f32 buffer whose start is 64-byte aligned.
///
/// Stored as whole cache lines so that alignment comes from the element type and the
/// buffer needs no `unsafe` allocation code.
#[derive(Clone, Default)]
pub struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedVec {
    /// A zero-filled buffer of `len` floats.
    pub fn zeros(len: usize) -> Self {
        AlignedVec { lines: vec![Line([0.0; 16]); len.div_ceil(16)], len }
    }

    /// As [`AlignedVec::zeros`], but running out of memory is an error that says how much
    /// was asked for (for sizes that come from input).
    pub fn try_zeros(len: usize) -> Result<Self> {
        let mut v = AlignedVec::default();
        v.resize(len)?;
        Ok(v)
    }

    /// A buffer holding a copy of `values`.
    pub fn from_slice(values: &[f32]) -> Self {
        let mut v = Self::zeros(values.len());
        v.as_mut_slice().copy_from_slice(values);
        v
    }

    /// Number of floats.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no floats.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The floats.
    pub fn as_slice(&self) -> &[f32] {
        &bytemuck::cast_slice::<Line, f32>(&self.lines)[..self.len]
    }

    /// The floats, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Line, f32>(&mut self.lines)[..self.len]
    }

    /// Grows (zero-filled) or shrinks to `len`; keeps the allocation when shrinking.
    /// Running out of memory is an error that says how many bytes were asked for.
    pub fn resize(&mut self, len: usize) -> Result<()> {
        let lines = len.div_ceil(16);
        if lines > self.lines.len() {
            let more = lines - self.lines.len();
            self.lines.try_reserve_exact(more).map_err(|_| {
                Error::out_of_memory(format!("{} bytes for a buffer of {len} floats", lines.saturating_mul(64)))
            })?;
            self.lines.resize(lines, Line([0.0; 16]));
        }
        if len > self.len {
            let old = self.len;
            self.len = len;
            self.as_mut_slice()[old..].fill(0.0);
        } else {
            self.len = len;
        }
        Ok(())
    }

    /// The first `len` elements of type `T` the buffer holds, grown (zero-filled) to hold
    /// them if shorter: an f32 buffer holds twice as many bf16 values.
    pub fn grow_elements<T: crate::Element>(&mut self, len: usize) -> Result<&mut [T]> {
        let floats = (len * std::mem::size_of::<T>()).div_ceil(4);
        if self.len < floats {
            self.resize(floats)?;
        }
        Ok(&mut self.elements_mut::<T>()[..len])
    }

    /// The buffer read as elements of type `T`.
    pub fn elements<T: crate::Element>(&self) -> &[T] {
        bytemuck::cast_slice(self.as_slice())
    }

    /// The buffer as elements of type `T`, mutable.
    pub fn elements_mut<T: crate::Element>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.as_mut_slice())
    }

    /// Floats the allocation holds without growing.
    pub fn capacity(&self) -> usize {
        self.lines.len() * 16
    }
}

impl std::fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedVec").field("len", &self.len).finish()
    }
}

impl std::ops::Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.as_mut_slice()
    }
}
