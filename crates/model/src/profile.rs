//! Per-step timings of a profiled forward pass.

use crate::layers::ConvPath;
use crate::spec::ConvKind;
use convkit_tensor::Shape;
use std::time::Instant;

/// What a profiled step was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepKind {
    /// Layout conversion of the input into the NHWC arena.
    Input,
    /// A convolution of this kind.
    Conv(ConvKind),
    /// Max pooling (the stem's, or the subsampling of a reduced block's shortcut).
    MaxPool,
    /// D's 2x2 average pool before a projection shortcut.
    AvgPool,
    /// The global average pool before the classifier.
    GlobalPool,
    /// The fully connected classifier.
    Fc,
    /// A downsampling block's projection shortcut and its first two convs, run side by
    /// side ([`crate::ModelConfig::parallel_branches`]): one step, the wall time of both.
    Branches,
}

impl StepKind {
    /// The short name profiles print: stem, 1x1, 3x3, maxpool, avgpool, gap, fc, input,
    /// branches.
    pub fn label(&self) -> &'static str {
        match self {
            StepKind::Input => "input",
            StepKind::Conv(ConvKind::Stem) => "stem",
            StepKind::Conv(ConvKind::Conv1x1) => "1x1",
            StepKind::Conv(ConvKind::Conv3x3) => "3x3",
            StepKind::MaxPool => "maxpool",
            StepKind::AvgPool => "avgpool",
            StepKind::GlobalPool => "gap",
            StepKind::Fc => "fc",
            StepKind::Branches => "branches",
        }
    }
}

/// One step of a profiled forward pass.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// The layer's name (its weight key prefix).
    pub name: String,
    /// What the step was.
    pub kind: StepKind,
    /// The kernel a conv step ran on (None for other steps).
    pub path: Option<ConvPath>,
    /// Its input shape (the whole batch).
    pub input: Shape,
    /// Its output shape (the whole batch).
    pub output: Shape,
    /// Multiply-adds it computed.
    pub macs: u64,
    /// Wall time, summed over sub-batches.
    pub seconds: f64,
    /// Scratch bytes of this step: the im2col matrix tile, or the padded input of a direct
    /// KxK conv (0 for 1x1 convs and pools).
    pub scratch_bytes: usize,
    /// Of `seconds`, the time spent in im2col copies (im2col path only).
    pub lowering_seconds: f64,
}

/// What calibration sees of a forward pass: each activation tensor's values, by name.
pub(crate) type Observer<'a> = &'a mut (dyn FnMut(&str, &[f32]) -> Result<(), crate::ModelError> + Send);

/// Records steps when profiling, and shows activations to an observer when calibrating;
/// free otherwise.
pub(crate) struct Recorder<'a> {
    pub(crate) steps: Option<&'a mut Vec<StepTiming>>,
    pub(crate) start: Instant,
    /// im2col time of the step under way.
    pub(crate) lowering: f64,
    pub(crate) observer: Option<Observer<'a>>,
}

impl Recorder<'_> {
    /// Shows the observer, if any, the values of activation tensor `name`.
    pub(crate) fn observe<T: convkit_tensor::Element>(
        &mut self,
        name: &str,
        data: &[T],
    ) -> Result<(), crate::ModelError> {
        match self.observer.as_deref_mut() {
            Some(observe) => observe(name, &data.iter().map(|v| v.to_f32()).collect::<Vec<f32>>()),
            None => Ok(()),
        }
    }

    pub(crate) fn begin(&mut self) {
        if self.steps.is_some() {
            self.start = Instant::now();
        }
    }
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end(
        &mut self,
        name: &str,
        kind: StepKind,
        path: Option<ConvPath>,
        input: Shape,
        output: Shape,
        macs: u64,
        scratch: usize,
    ) {
        if let Some(steps) = self.steps.as_deref_mut() {
            steps.push(StepTiming {
                name: name.to_string(),
                kind,
                path,
                input,
                output,
                macs,
                seconds: self.start.elapsed().as_secs_f64(),
                scratch_bytes: scratch,
                lowering_seconds: std::mem::take(&mut self.lowering),
            });
        }
    }
}

/// Adds the steps of a later sub-batch (`steps[later..]`) into those of the first
/// (`steps[first..later]`, the same steps in the same order) and drops them.
pub(crate) fn merge_steps(steps: &mut Vec<StepTiming>, first: usize, later: usize) {
    let (head, tail) = steps.split_at_mut(later);
    for (into, from) in head[first..].iter_mut().zip(tail.iter()) {
        into.seconds += from.seconds;
        into.lowering_seconds += from.lowering_seconds;
        into.macs += from.macs;
    }
    steps.truncate(later);
}
