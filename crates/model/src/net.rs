//! The built network: BN folded into packed conv weights, and the NHWC forward pass.

use crate::spec::{BlockSpec, ConvKind, ConvSpec, NetSpec, ResNetSpec, SHORTCUT_POOL, STEM_POOL};
use crate::weights::Weights;
use crate::ModelError;
use convkit_conv1x1::Conv1x1;
use convkit_direct::DirectConv;
use convkit_im2col::Im2colConv;
use convkit_pool::{global_avg_pool_into, pool2d_into, PoolKind};
use convkit_tensor::{
    AlignedVec, Conv, Epilogue, Error, FilterShape, Layout, Shape, TensorView, TensorViewMut, Window,
};
use convkit_winograd::{WinogradConv, WinogradTile};
use std::time::Instant;

/// Batch-norm epsilon of torchvision and timm.
pub const BN_EPS: f32 = 1e-5;

/// What a profiled step was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Layout conversion of the input into the NHWC arena.
    Input,
    Conv(ConvKind),
    MaxPool,
    AvgPool,
    GlobalPool,
    Fc,
}

impl StepKind {
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
        }
    }
}

/// One step of a profiled forward pass.
#[derive(Debug, Clone)]
pub struct StepTiming {
    pub name: String,
    pub kind: StepKind,
    /// The kernel a conv step ran on (None for other steps).
    pub path: Option<ConvPath>,
    pub input: Shape,
    pub output: Shape,
    pub macs: u64,
    pub seconds: f64,
    /// Scratch bytes of this step: the im2col matrix tile, or the padded input of a direct
    /// KxK conv (0 for 1x1 convs and pools).
    pub scratch_bytes: usize,
    /// Of `seconds`, the time spent in im2col copies (im2col path only).
    pub lowering_seconds: f64,
}

/// Under `KxkPath::Auto`, stride-1 3x3 convs with at most this many input channels (the
/// deep stem's 32, stages 1 and 2) run on Winograd F(4x4, 3x3), the wider ones on
/// F(2x2, 3x3). F(4x4) measured 1.4-2.7x the direct path and 1.3-1.6x F(2x2) up to 256
/// channels, but its weights are 4x the 3x3 ones (F(2x2): 16/9): on stage 3 that is 26 MB
/// more than F(2x2) for about 0.6 ms, past the 160 MiB budget at batch 1.
pub const WINOGRAD_F4_MAX_CHANNELS: usize = 128;

/// How KxK convs (the stem, the 3x3 convs) run. 1x1 convs always take the direct path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KxkPath {
    /// Stride-1 3x3 convs on Winograd, F(4x4) up to [`WINOGRAD_F4_MAX_CHANNELS`] input
    /// channels and F(2x2) above; the others (strided, the 7x7 stem) on `Direct`.
    #[default]
    Auto,
    /// As `Auto` with F(4x4) up to 256 channels: the fastest, for 26 MB more weights.
    Winograd,
    /// `DirectConv`: the 1x1 microkernel over a zero-padded input copy.
    Direct,
    /// im2col + the `gemm` crate: the formulation of the paper's argument.
    Im2col,
}

impl KxkPath {
    /// The Winograd tile a stride-1 3x3 conv with `ci` input channels runs on, if any.
    pub fn winograd_tile(self, ci: usize) -> Option<WinogradTile> {
        let f4_max = match self {
            KxkPath::Auto => WINOGRAD_F4_MAX_CHANNELS,
            KxkPath::Winograd => 256,
            KxkPath::Direct | KxkPath::Im2col => return None,
        };
        Some(if ci <= f4_max { WinogradTile::F4x4 } else { WinogradTile::F2x2 })
    }
}

/// The kernel a conv layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConvPath {
    /// `Conv1x1`: the microkernel reads the activation in place.
    Conv1x1,
    /// `DirectConv`: the microkernel over a zero-padded input copy.
    Direct,
    /// `WinogradConv` with this tile.
    Winograd(WinogradTile),
    /// `Im2colConv`: im2col + the `gemm` crate.
    Im2col,
}

impl ConvPath {
    /// The short name profiles print.
    pub fn label(self) -> &'static str {
        match self {
            ConvPath::Conv1x1 | ConvPath::Direct => "direct",
            ConvPath::Winograd(WinogradTile::F2x2) => "wino-f2",
            ConvPath::Winograd(WinogradTile::F4x4) => "wino-f4",
            ConvPath::Im2col => "im2col",
        }
    }
}

struct ConvLayer {
    name: String,
    kind: ConvKind,
    path: ConvPath,
    op: Box<dyn Conv>,
}

impl ConvLayer {
    /// Folds BN into the conv and packs it for its kernel.
    fn build(spec: &ConvSpec, weights: &mut Weights, kxk: KxkPath) -> Result<Self, ModelError> {
        let mut folded = weights.take(&format!("{}.weight", spec.conv))?.data;
        let mut bn = |s: &str| weights.take(&format!("{}.{s}", spec.bn)).map(|t| t.data);
        let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
        let per_out = spec.ci * spec.kernel * spec.kernel;
        let mut bias = vec![0.0; spec.co];
        for o in 0..spec.co {
            let scale = gamma[o] / (var[o] + BN_EPS).sqrt();
            folded[o * per_out..(o + 1) * per_out].iter_mut().for_each(|v| *v *= scale);
            bias[o] = beta[o] - mean[o] * scale;
        }
        let filter = FilterShape::new(spec.co, spec.ci, spec.kernel, spec.kernel);
        let bias = Some(&bias[..]);
        let tile = (spec.window() == WinogradConv::WINDOW).then(|| kxk.winograd_tile(spec.ci)).flatten();
        let (path, op): (ConvPath, Box<dyn Conv>) = match (spec.kernel, kxk, tile) {
            (1, _, _) => (ConvPath::Conv1x1, Box::new(Conv1x1::new(&folded, filter, bias, spec.stride, Layout::Nhwc)?)),
            (_, _, Some(tile)) => (ConvPath::Winograd(tile), Box::new(WinogradConv::new(&folded, filter, bias, tile)?)),
            (_, KxkPath::Im2col, None) => {
                (ConvPath::Im2col, Box::new(Im2colConv::new(&folded, filter, bias, spec.window(), Layout::Nhwc)?))
            }
            (_, KxkPath::Auto | KxkPath::Winograd | KxkPath::Direct, None) => {
                (ConvPath::Direct, Box::new(DirectConv::new(&folded, filter, bias, spec.window())?))
            }
        };
        Ok(ConvLayer { name: spec.conv.clone(), kind: spec.kind, path, op })
    }
}

struct Block {
    conv1: ConvLayer,
    conv2: ConvLayer,
    conv3: ConvLayer,
    downsample: Option<Downsample>,
    /// Step name of the subsampling of the identity shortcut, when the block computes its
    /// output at every other position only (see `NetSpec::reduced_positions`).
    subsample: Option<String>,
}

/// Reads every other pixel of every other row (a 1x1 max pool with stride 2).
const SUBSAMPLE: Window = Window::square(1, 2, 0);

struct Downsample {
    /// Step name of the 2x2 average pool before the conv (D), if any: made at build time
    /// so the forward pass formats nothing.
    pool: Option<String>,
    conv: ConvLayer,
}

/// Arena of one forward pass: activation buffers that grow to the largest activation on
/// the first call for a batch size and are reused after, and the im2col scratch.
#[derive(Debug, Default)]
pub struct Workspace {
    bufs: [AlignedVec; BUFFERS],
    scratch: AlignedVec,
    features: AlignedVec,
    logits: AlignedVec,
    /// Logits of a whole batch run in sub-batches.
    batch_logits: AlignedVec,
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held by the arena.
    pub fn bytes(&self) -> usize {
        4 * (self.bufs.iter().map(AlignedVec::capacity).sum::<usize>()
            + self.scratch.capacity()
            + self.features.capacity()
            + self.logits.capacity()
            + self.batch_logits.capacity())
    }
}

/// Buffer roles in the arena.
const X: usize = 0; // block input
const Y: usize = 1; // block output
const T1: usize = 2;
/// Also holds D's pooled shortcut input, which is dead before conv2 writes T2.
const T2: usize = 3;
const BUFFERS: usize = 4;

/// A ResNet ready to run: BN folded, weights packed once.
pub struct ResNet {
    spec: ResNetSpec,
    net: NetSpec,
    stem: Vec<ConvLayer>,
    blocks: Vec<Block>,
    fc: Conv1x1,
    sub_batch: usize,
}

/// Images a forward pass runs through the network at a time (see [`ResNet::with_sub_batch`]):
/// at batch 8 on 2 threads, image by image was faster than the whole batch at once
/// (docs/results.md), and it keeps the arena at its batch-1 size.
pub const DEFAULT_SUB_BATCH: usize = 1;

impl std::fmt::Debug for ResNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResNet").field("spec", &self.spec).finish()
    }
}

/// Records steps when profiling; free otherwise.
struct Recorder<'a> {
    steps: Option<&'a mut Vec<StepTiming>>,
    start: Instant,
    /// im2col time of the step under way.
    lowering: f64,
}

impl Recorder<'_> {
    fn begin(&mut self) {
        if self.steps.is_some() {
            self.start = Instant::now();
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn end(
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
fn merge_steps(steps: &mut Vec<StepTiming>, first: usize, later: usize) {
    let (head, tail) = steps.split_at_mut(later);
    for (into, from) in head[first..].iter_mut().zip(tail.iter()) {
        into.seconds += from.seconds;
        into.lowering_seconds += from.lowering_seconds;
        into.macs += from.macs;
    }
    steps.truncate(later);
}

/// Takes two distinct buffers: `src`, and the first `len` floats of `dst` (contents kept).
/// Buffers only grow (zero-filled, on the first pass for a batch size): shrinking and
/// regrowing them would zero-fill the regrown part on every pass.
fn split_bufs(bufs: &mut [AlignedVec; BUFFERS], src: usize, dst: usize, len: usize) -> (&AlignedVec, &mut [f32]) {
    let mut slots = bufs.each_mut().map(Some);
    let d = slots[dst].take().expect("distinct buffers");
    let s = slots[src].take().expect("distinct buffers");
    if d.len() < len {
        d.resize(len);
    }
    (s, &mut d[..len])
}

fn view(buf: &AlignedVec, shape: Shape) -> Result<TensorView<'_>, Error> {
    TensorView::new(shape, Layout::Nhwc, &buf[..shape.numel()?])
}

impl ResNet {
    /// Builds the network of `weights.spec()`: BN folded, every conv packed for its kernel.
    pub fn new(weights: &Weights) -> Result<Self, ModelError> {
        Self::with_kxk_path(weights, KxkPath::default())
    }

    /// As [`ResNet::new`], with the KxK convs on `kxk`.
    pub fn with_kxk_path(weights: &Weights, kxk: KxkPath) -> Result<Self, ModelError> {
        Self::from_weights(weights.clone(), kxk)
    }

    /// Builds from owned weights, freeing each raw tensor once it is packed: the process
    /// then never holds the raw and the packed network in full at once.
    pub fn from_weights(mut weights: Weights, kxk: KxkPath) -> Result<Self, ModelError> {
        let weights = &mut weights;
        let spec = weights.spec();
        let (net, subsample) = spec.layers().reduced_positions();
        let stem = net.stem.iter().map(|c| ConvLayer::build(c, weights, kxk)).collect::<Result<_, _>>()?;
        let blocks = net
            .blocks
            .iter()
            .zip(subsample)
            .map(|(b, subsample): (&BlockSpec, bool)| {
                Ok(Block {
                    subsample: subsample.then(|| format!("{}.subsample", b.name)),
                    conv1: ConvLayer::build(&b.conv1, weights, kxk)?,
                    conv2: ConvLayer::build(&b.conv2, weights, kxk)?,
                    conv3: ConvLayer::build(&b.conv3, weights, kxk)?,
                    downsample: match &b.downsample {
                        Some(d) => Some(Downsample {
                            pool: d.pool.then(|| format!("{}.pool", d.conv.conv)),
                            conv: ConvLayer::build(&d.conv, weights, kxk)?,
                        }),
                        None => None,
                    },
                })
            })
            .collect::<Result<_, ModelError>>()?;
        let fc_w = weights.take("fc.weight")?;
        let fc_b = weights.take("fc.bias")?;
        let fc = Conv1x1::new(
            &fc_w.data,
            FilterShape::new(net.classes, net.features, 1, 1),
            Some(&fc_b.data),
            1,
            Layout::Nhwc,
        )?;
        Ok(ResNet { spec, net, stem, blocks, fc, sub_batch: DEFAULT_SUB_BATCH })
    }

    pub fn spec(&self) -> ResNetSpec {
        self.spec
    }
    pub fn classes(&self) -> usize {
        self.net.classes
    }

    /// Runs larger batches `images` at a time (at least 1; [`DEFAULT_SUB_BATCH`] unless
    /// set): the arena holds the activations of one sub-batch, and each layer's work is
    /// split across threads within it.
    pub fn with_sub_batch(mut self, images: usize) -> Self {
        self.sub_batch = images.max(1);
        self
    }

    pub fn sub_batch(&self) -> usize {
        self.sub_batch
    }

    /// Logits [n, classes] for `input` (3 channels, NCHW or NHWC). Runs on the current
    /// rayon pool: call inside `pool.install()` to choose the threads.
    pub fn forward<'w>(&self, input: TensorView<'_>, ws: &'w mut Workspace) -> Result<&'w [f32], ModelError> {
        self.run_sub_batches(input, ws, None)
    }

    /// As [`ResNet::forward`], and appends the time of every step to `steps` (one entry
    /// per step, summed over the sub-batches).
    pub fn forward_profiled<'w>(
        &self,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
        steps: &mut Vec<StepTiming>,
    ) -> Result<&'w [f32], ModelError> {
        self.run_sub_batches(input, ws, Some(steps))
    }

    fn run_sub_batches<'w>(
        &self,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
        mut steps: Option<&mut Vec<StepTiming>>,
    ) -> Result<&'w [f32], ModelError> {
        let shape = input.shape();
        if shape.n <= self.sub_batch {
            return self.run(input, ws, steps);
        }
        shape.validate()?;
        let classes = self.net.classes;
        let mut logits = std::mem::take(&mut ws.batch_logits);
        if logits.len() < shape.n * classes {
            logits.resize(shape.n * classes);
        }
        let first_step = steps.as_ref().map_or(0, |s| s.len());
        let per_image = shape.image_len();
        for n0 in (0..shape.n).step_by(self.sub_batch) {
            let images = self.sub_batch.min(shape.n - n0);
            let part = &input.data()[n0 * per_image..(n0 + images) * per_image];
            let view = TensorView::new(Shape { n: images, ..shape }, input.layout(), part)?;
            let part_steps = steps.as_deref_mut();
            let before = part_steps.as_ref().map_or(0, |s| s.len());
            let out = self.run(view, ws, part_steps)?;
            logits[n0 * classes..(n0 + images) * classes].copy_from_slice(out);
            if let Some(s) = steps.as_deref_mut() {
                if n0 > 0 {
                    merge_steps(s, first_step, before);
                }
            }
        }
        if let Some(s) = steps {
            for step in &mut s[first_step..] {
                step.input.n = shape.n;
                step.output.n = shape.n;
            }
        }
        ws.batch_logits = logits;
        Ok(&ws.batch_logits[..shape.n * classes])
    }

    fn run<'w>(
        &self,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
        steps: Option<&mut Vec<StepTiming>>,
    ) -> Result<&'w [f32], ModelError> {
        let mut rec = Recorder { steps, start: Instant::now(), lowering: 0.0 };
        let shape = input.shape();
        shape.validate()?;
        if shape.c != 3 {
            return Err(Error::mismatch("input channels (an RGB image)", 3, shape.c).into());
        }
        rec.begin();
        let numel = shape.numel()?;
        if ws.bufs[X].len() < numel {
            ws.bufs[X].resize(numel);
        }
        let x = &mut ws.bufs[X][..numel];
        match input.layout() {
            Layout::Nhwc => x.copy_from_slice(input.data()),
            Layout::Nchw => {
                let hw = shape.h * shape.w;
                for n in 0..shape.n {
                    let dst = &mut x[n * 3 * hw..(n + 1) * 3 * hw];
                    convkit_tensor::transpose(input.image(n), dst, 3, hw);
                }
            }
        }
        rec.end("input", StepKind::Input, None, shape, shape, 0, 0);

        let mut cur = shape;
        // The stem ping-pongs between the block input and output buffers, so the branch
        // temporaries T1/T2 only ever hold the (narrower) bottleneck activations.
        for layer in &self.stem {
            cur = self.conv(layer, ws, X, Y, cur, false, true, &mut rec)?;
            ws.bufs.swap(X, Y);
        }
        cur = Self::pool(ws, X, Y, cur, STEM_POOL, PoolKind::Max, "maxpool", &mut rec)?;
        ws.bufs.swap(X, Y);

        for block in &self.blocks {
            // The block's last conv adds its result to the shortcut in place
            // (`Epilogue::accumulate`): to the block input for an identity shortcut, to the
            // projection computed into the output buffer otherwise. Either way each output
            // line is read and written once, and no buffer holds the shortcut alone.
            let out = match &block.downsample {
                Some(Downsample { pool, conv }) => {
                    let (src, src_shape) = match pool {
                        Some(name) => {
                            let avg = PoolKind::Average { count_include_pad: false };
                            (T2, Self::pool(ws, X, T2, cur, SHORTCUT_POOL, avg, name, &mut rec)?)
                        }
                        None => (X, cur),
                    };
                    self.conv(conv, ws, src, Y, src_shape, false, false, &mut rec)?;
                    Y
                }
                None => match &block.subsample {
                    Some(name) => {
                        Self::pool(ws, X, Y, cur, SUBSAMPLE, PoolKind::Max, name, &mut rec)?;
                        Y
                    }
                    None => X,
                },
            };
            let t = self.conv(&block.conv1, ws, X, T1, cur, false, true, &mut rec)?;
            let t = self.conv(&block.conv2, ws, T1, T2, t, false, true, &mut rec)?;
            cur = self.conv(&block.conv3, ws, T2, out, t, true, true, &mut rec)?;
            if out == Y {
                ws.bufs.swap(X, Y);
            }
        }

        rec.begin();
        let features = self.net.features;
        ws.features.resize(shape.n * features);
        global_avg_pool_into(view(&ws.bufs[X], cur)?, &mut ws.features)?;
        let pooled = Shape::new(shape.n, features, 1, 1);
        rec.end("avgpool", StepKind::GlobalPool, None, cur, pooled, 0, 0);

        rec.begin();
        let classes = self.net.classes;
        ws.logits.resize(shape.n * classes);
        let out_shape = Shape::new(shape.n, classes, 1, 1);
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, &mut ws.logits)?;
        self.fc.forward(
            TensorView::new(pooled, Layout::Nhwc, &ws.features)?,
            &mut out,
            Epilogue::NONE,
            &mut ws.scratch,
        )?;
        rec.end(
            "fc",
            StepKind::Fc,
            Some(ConvPath::Conv1x1),
            pooled,
            out_shape,
            (shape.n * features * classes) as u64,
            0,
        );
        Ok(&ws.logits)
    }

    /// Runs one conv from buffer `src` into `dst` (adding to its contents when
    /// `accumulate`), returns its output shape.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        layer: &ConvLayer,
        ws: &mut Workspace,
        src: usize,
        dst: usize,
        in_shape: Shape,
        accumulate: bool,
        relu: bool,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        let out_shape = layer.op.output_shape(in_shape)?;
        rec.begin();
        let (s, d) = split_bufs(&mut ws.bufs, src, dst, out_shape.numel()?);
        let input = view(s, in_shape)?;
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, d)?;
        let epilogue = Epilogue { residual: None, accumulate, relu };
        let op = &layer.op;
        rec.lowering = op.forward_timed(input, &mut out, epilogue, &mut ws.scratch)?.as_secs_f64();
        let scratch = 4 * op.scratch_len(in_shape)?;
        let macs = (out_shape.numel()? * op.filter().reduction_len()) as u64;
        rec.end(&layer.name, StepKind::Conv(layer.kind), Some(layer.path), in_shape, out_shape, macs, scratch);
        Ok(out_shape)
    }

    #[allow(clippy::too_many_arguments)]
    fn pool(
        ws: &mut Workspace,
        src: usize,
        dst: usize,
        in_shape: Shape,
        window: convkit_tensor::Window,
        kind: PoolKind,
        name: &str,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        rec.begin();
        let out_shape = convkit_pool::output_shape(in_shape, window)?;
        let (s, d) = split_bufs(&mut ws.bufs, src, dst, out_shape.numel()?);
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, d)?;
        pool2d_into(view(s, in_shape)?, window, kind, &mut out)?;
        let step = if kind == PoolKind::Max { StepKind::MaxPool } else { StepKind::AvgPool };
        rec.end(name, step, None, in_shape, out_shape, 0, 0);
        Ok(out_shape)
    }
}

/// Batch-level parallelism: each worker runs a contiguous share of the images through the
/// whole network on a pool of one thread of its own, with its own arena, instead of
/// splitting every layer across threads. The logits are bitwise those of
/// [`ResNet::forward`] (no output's arithmetic depends on the split).
pub struct BatchRunner {
    pools: Vec<rayon::ThreadPool>,
    spaces: Vec<Workspace>,
    logits: Vec<f32>,
}

impl std::fmt::Debug for BatchRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRunner").field("workers", &self.pools.len()).finish()
    }
}

impl BatchRunner {
    /// `workers` single-thread pools (at least one).
    pub fn new(workers: usize) -> Result<Self, ModelError> {
        let pools = (0..workers.max(1))
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::weights(format!("thread pool: {e}")))?;
        let spaces = pools.iter().map(|_| Workspace::new()).collect();
        Ok(BatchRunner { pools, spaces, logits: Vec::new() })
    }

    /// Logits [n, classes], the images split into one contiguous share per worker.
    pub fn forward(&mut self, model: &ResNet, input: TensorView<'_>) -> Result<&[f32], ModelError> {
        let shape = input.shape();
        shape.validate()?;
        let workers = self.pools.len().min(shape.n);
        let per_image = shape.image_len();
        let classes = model.classes();
        self.logits.resize(shape.n * classes, 0.0);
        let mut results: Vec<Result<(), ModelError>> = Vec::with_capacity(workers);
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(workers);
            let mut logits = self.logits.as_mut_slice();
            let mut first = 0;
            for (w, (pool, ws)) in self.pools.iter().zip(self.spaces.iter_mut()).take(workers).enumerate() {
                let images = shape.n / workers + usize::from(w < shape.n % workers);
                let (mine, rest) = std::mem::take(&mut logits).split_at_mut(images * classes);
                logits = rest;
                let data = &input.data()[first * per_image..(first + images) * per_image];
                first += images;
                handles.push(scope.spawn(move || -> Result<(), ModelError> {
                    let view = TensorView::new(Shape { n: images, ..shape }, input.layout(), data)?;
                    let out = pool.install(|| model.forward(view, ws))?;
                    mine.copy_from_slice(out);
                    Ok(())
                }));
            }
            results.extend(handles.into_iter().map(|h| h.join().expect("batch worker panicked")));
        });
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(&self.logits)
    }
}
