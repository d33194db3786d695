//! The activation arena of a forward pass: buffers named by the role they play in a
//! residual block, grown once per batch size and reused after.

use convkit_tensor::{AlignedVec, Element, Error, Layout, Shape, TensorView};

/// The role of an arena buffer in a residual block. The stem ping-pongs between
/// `Input` and `Output`, so the two bottleneck buffers only ever hold the (narrower)
/// bottleneck activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buf {
    /// The block's input, which is also its identity shortcut.
    Input,
    /// The block's output when it is not written over its input: the projection
    /// shortcut is computed into it and the last conv adds to it.
    Output,
    /// The bottleneck activation after the block's first conv.
    Mid1,
    /// The bottleneck activation after the second conv; before that, D's pooled shortcut
    /// input (dead once the projection has read it).
    Mid2,
    /// D's pooled shortcut input when the shortcut runs beside the main branch
    /// ([`crate::ModelConfig::parallel_branches`]), which writes `Mid2` meanwhile; empty
    /// otherwise.
    Pooled,
}

const BUFFERS: usize = 5;

/// The activation buffers, indexed by [`Buf`].
#[derive(Debug, Default)]
pub(crate) struct Buffers([AlignedVec; BUFFERS]);

impl std::ops::Index<Buf> for Buffers {
    type Output = AlignedVec;
    fn index(&self, b: Buf) -> &AlignedVec {
        &self.0[b as usize]
    }
}

impl std::ops::IndexMut<Buf> for Buffers {
    fn index_mut(&mut self, b: Buf) -> &mut AlignedVec {
        &mut self.0[b as usize]
    }
}

impl Buffers {
    /// Exchanges the contents of two roles (the output of a block becomes the next input).
    pub(crate) fn swap(&mut self, a: Buf, b: Buf) {
        self.0.swap(a as usize, b as usize);
    }

    /// The first `len` elements of `b`, grown if shorter. Buffers only grow (zero-filled,
    /// on the first pass for a batch size): shrinking and regrowing them would zero-fill
    /// the regrown part on every pass.
    pub(crate) fn grow<T: Element>(&mut self, b: Buf, len: usize) -> Result<&mut [T], Error> {
        self[b].grow_elements::<T>(len)
    }

    /// Two distinct buffers: `src` whole, and the first `len` elements of `dst` (grown if
    /// shorter, contents kept).
    pub(crate) fn split<T: Element>(&mut self, src: Buf, dst: Buf, len: usize) -> Result<(&[T], &mut [T]), Error> {
        let [a, b] = self
            .0
            .get_disjoint_mut([src as usize, dst as usize])
            .map_err(|_| Error::invalid(format!("a step reads and writes the same buffer ({src:?})")))?;
        Ok((a.elements::<T>(), b.grow_elements::<T>(len)?))
    }

    /// The buffers of `roles` at once, for steps that run side by side; a role named twice
    /// is an error.
    pub(crate) fn disjoint<const N: usize>(&mut self, roles: [Buf; N]) -> Result<[&mut AlignedVec; N], Error> {
        self.0
            .get_disjoint_mut(roles.map(|b| b as usize))
            .map_err(|_| Error::invalid(format!("steps side by side share a buffer ({roles:?})")))
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        4 * self.0.iter().map(AlignedVec::capacity).sum::<usize>()
    }
}

/// Arena of one forward pass: the activation buffers, the conv scratch, and the pooled
/// features and logits. Grows on the first call for a batch size; reused after.
#[derive(Debug, Default)]
pub struct Workspace {
    pub(crate) bufs: Buffers,
    pub(crate) scratch: AlignedVec,
    /// The shortcut's conv scratch when it runs beside the main branch.
    pub(crate) branch_scratch: AlignedVec,
    pub(crate) features: AlignedVec,
    pub(crate) logits: AlignedVec,
    /// Logits of a whole batch run in sub-batches.
    pub(crate) batch_logits: AlignedVec,
}

impl Workspace {
    /// An empty arena.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held by the arena.
    pub fn bytes(&self) -> usize {
        self.bufs.bytes()
            + 4 * (self.scratch.capacity()
                + self.branch_scratch.capacity()
                + self.features.capacity()
                + self.logits.capacity()
                + self.batch_logits.capacity())
    }
}

/// An NHWC view of the first `shape.numel()` elements of `buf`.
pub(crate) fn view<T: Element>(buf: &[T], shape: Shape) -> Result<TensorView<'_, T>, Error> {
    let numel = shape.numel()?;
    let data = buf.get(..numel).ok_or_else(|| Error::mismatch("arena buffer length", numel, buf.len()))?;
    TensorView::new(shape, Layout::Nhwc, data)
}
