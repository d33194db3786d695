//! The built network: BN folded into packed conv weights, and the NHWC forward pass.

use crate::arena::{view, Buf, Workspace};
use crate::config::ModelConfig;
use crate::int8::{Int8Weights, INPUT_TENSOR};
use crate::layers::{Block, ConvLayer, ConvPath, Downsample, Fused, KxkPath, ModelElement, SUBSAMPLE};
use crate::profile::{merge_steps, Observer, Recorder, StepKind, StepTiming};
use crate::spec::{BlockSpec, ConvSpec, NetSpec, ResNetSpec, SHORTCUT_POOL, STEM_POOL};
use crate::weights::{WeightSource, WeightTensor};
use crate::ModelError;
use convkit_conv1x1::Conv1x1;
use convkit_microkernel::{Family, Kernel};
use convkit_pool::{global_avg_pool_into, pool2d_into, PoolKind};
use convkit_tensor::{
    bf16, Conv, ConvQuant, Epilogue, Error, FilterShape, Layout, Precision, Quant, Shape, TensorView, TensorViewMut,
};
use std::time::Instant;

/// A ResNet ready to run: BN folded, weights packed once. Built by [`ModelConfig::build`].
pub struct ResNet {
    config: ModelConfig,
    net: NetSpec,
    network: AnyNetwork,
    fc: Conv1x1,
    /// The kernel the convs run on.
    kernel: Kernel,
    /// The family pooling runs on.
    family: Family,
    /// The model's own threads, when the config asks for them.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    /// One single-thread pool for each branch of a downsampling block, when they run
    /// side by side.
    branch_pools: Option<std::sync::Arc<[rayon::ThreadPool; 2]>>,
}

/// The conv layers of a network over activations of type `T`.
struct Network<T: ModelElement> {
    stem: Vec<ConvLayer<T>>,
    blocks: Vec<Block<T>>,
    /// The image's quantization (int8 only).
    input_quant: Option<Quant>,
    /// The last block output's quantization, by which the global pool's means are
    /// dequantized (int8 only).
    features_quant: Option<Quant>,
}

/// The network in the precision it was built in: matched once per forward pass.
enum AnyNetwork {
    F32(Network<f32>),
    Bf16(Network<bf16>),
    Int8(Network<u8>),
}

impl std::fmt::Debug for ResNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResNet").field("config", &self.config).field("kernel", &self.kernel).finish()
    }
}

impl<T: ModelElement> Network<T> {
    /// Every conv of `net` with BN folded in, packed for `kernel` (a kernel over `T`).
    fn build(
        net: &NetSpec,
        subsample: Vec<bool>,
        weights: &mut impl WeightSource,
        kxk: KxkPath,
        kernel: Kernel,
    ) -> Result<Self, ModelError> {
        let stem = net.stem.iter().map(|c| ConvLayer::build(c, weights, kxk, kernel)).collect::<Result<_, _>>()?;
        let blocks = net
            .blocks
            .iter()
            .zip(subsample)
            .map(|(b, subsample): (&BlockSpec, bool)| {
                Ok(Block {
                    branches_step: format!("{}.branches", b.name),
                    subsample: subsample.then(|| format!("{}.subsample", b.name)),
                    conv1: ConvLayer::build(&b.conv1, weights, kxk, kernel)?,
                    conv2: ConvLayer::build(&b.conv2, weights, kxk, kernel)?,
                    conv3: ConvLayer::build(&b.conv3, weights, kxk, kernel)?,
                    downsample: match &b.downsample {
                        Some(d) => Some(Downsample {
                            pool: d.pool.then(|| format!("{}.pool", d.conv.conv)),
                            conv: ConvLayer::build(&d.conv, weights, kxk, kernel)?,
                        }),
                        None => None,
                    },
                })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Network { stem, blocks, input_quant: None, features_quant: None })
    }
}

impl Network<u8> {
    /// Every conv of `net` from the calibrated `weights`, each with the quantization of
    /// the tensors it reads and writes: its input (the image, or the tensor before it; a
    /// pool keeps its input's), its output, and a block's shortcut for its last conv.
    fn build_int8(
        net: &NetSpec,
        subsample: Vec<bool>,
        weights: &mut Int8Weights,
        kxk: KxkPath,
        kernel: Kernel,
    ) -> Result<Self, ModelError> {
        let mut layer = |spec: &ConvSpec, input: &str, residual: Option<&str>| -> Result<ConvLayer<u8>, ModelError> {
            let quant = ConvQuant {
                input: weights.quant(input)?,
                output: weights.quant(&spec.conv)?,
                residual: residual.map(|r| weights.quant(r)).transpose()?,
            };
            ConvLayer::build_int8(spec, &weights.take_conv(&spec.conv)?, quant, kxk, kernel)
        };
        let mut tensor = INPUT_TENSOR;
        let mut stem = Vec::new();
        for c in &net.stem {
            stem.push(layer(c, tensor, None)?);
            tensor = &c.conv;
        }
        let mut blocks = Vec::new();
        for (b, subsample) in net.blocks.iter().zip(subsample) {
            let downsample = match &b.downsample {
                Some(d) => Some(Downsample {
                    pool: d.pool.then(|| format!("{}.pool", d.conv.conv)),
                    conv: layer(&d.conv, tensor, None)?,
                }),
                None => None,
            };
            let shortcut = b.downsample.as_ref().map_or(tensor, |d| &d.conv.conv);
            blocks.push(Block {
                branches_step: format!("{}.branches", b.name),
                subsample: subsample.then(|| format!("{}.subsample", b.name)),
                conv1: layer(&b.conv1, tensor, None)?,
                conv2: layer(&b.conv2, &b.conv1.conv, None)?,
                conv3: layer(&b.conv3, &b.conv2.conv, Some(shortcut))?,
                downsample,
            });
            tensor = &b.conv3.conv;
        }
        Ok(Network {
            stem,
            blocks,
            input_quant: Some(weights.quant(INPUT_TENSOR)?),
            features_quant: Some(weights.quant(tensor)?),
        })
    }
}

impl ResNet {
    /// Builds the network `config` describes from `weights` (checked by
    /// [`ModelConfig::build`]): BN folded, every conv packed for the config's kernel.
    pub(crate) fn build(config: ModelConfig, mut weights: impl WeightSource) -> Result<Self, ModelError> {
        let weights = &mut weights;
        let kernel = config.kernel()?;
        let (net, subsample) = Self::layers(&config);
        let network = match config.precision {
            Precision::F32 => AnyNetwork::F32(Network::build(&net, subsample, weights, config.kxk, kernel)?),
            Precision::Bf16 => AnyNetwork::Bf16(Network::build(&net, subsample, weights, config.kxk, kernel)?),
            Precision::Int8 => return Err(ModelConfig::int8_from_float().into()),
        };
        let (fc_w, fc_b) = (weights.take("fc.weight")?, weights.take("fc.bias")?);
        Self::assemble(config, net, network, kernel, &fc_w, &fc_b)
    }

    /// Builds the int8 network `config` describes from calibrated `weights` (checked by
    /// [`ModelConfig::build_int8`]).
    pub(crate) fn build_int8(config: ModelConfig, mut weights: Int8Weights) -> Result<Self, ModelError> {
        let kernel = config.kernel()?;
        let (net, subsample) = Self::layers(&config);
        let network = AnyNetwork::Int8(Network::build_int8(&net, subsample, &mut weights, config.kxk, kernel)?);
        let (fc_w, fc_b) = weights.fc();
        Self::assemble(config, net, network, kernel, fc_w, fc_b)
    }

    /// The layers the config's network computes, and which blocks subsample their
    /// identity shortcut (see `NetSpec::reduced_positions`).
    fn layers(config: &ModelConfig) -> (NetSpec, Vec<bool>) {
        let spec = config.spec;
        if config.only_read_positions {
            spec.layers().reduced_positions()
        } else {
            let net = spec.layers();
            let blocks = net.blocks.len();
            (net, vec![false; blocks])
        }
    }

    /// The model around a built network: the f32 classifier and the thread pools.
    fn assemble(
        config: ModelConfig,
        net: NetSpec,
        network: AnyNetwork,
        kernel: Kernel,
        fc_w: &WeightTensor,
        fc_b: &WeightTensor,
    ) -> Result<Self, ModelError> {
        let family = config.family()?;
        let fc_kernel = Kernel::pick(Precision::F32, config.kernel_features()?)?;
        let fc = Conv1x1::new(
            fc_kernel,
            &fc_w.data,
            FilterShape::new(net.classes, net.features, 1, 1),
            Some(&fc_b.data),
            1,
            Layout::Nhwc,
        )?;
        let pool = match config.threads {
            Some(threads) => Some(std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build()?)),
            None => None,
        };
        let branch_pools = if config.parallel_branches {
            let one = || rayon::ThreadPoolBuilder::new().num_threads(1).build();
            Some(std::sync::Arc::new([one()?, one()?]))
        } else {
            None
        };
        Ok(ResNet { config, net, network, fc, kernel, family, pool, branch_pools })
    }

    /// What the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The kernel the convs run on.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The precision the network computes in.
    pub fn precision(&self) -> Precision {
        self.config.precision
    }

    /// The spec the network was built from.
    pub fn spec(&self) -> ResNetSpec {
        self.config.spec
    }

    /// Number of classes (the length of each image's logits).
    pub fn classes(&self) -> usize {
        self.net.classes
    }

    /// Images run through the network at a time.
    pub fn sub_batch(&self) -> usize {
        self.config.sub_batch.max(1)
    }

    /// Whether downsampling blocks run their branches side by side.
    pub fn parallel_branches(&self) -> bool {
        self.branch_pools.is_some()
    }

    /// Threads of the model's own pool, if it has one.
    pub fn threads(&self) -> Option<usize> {
        self.pool.as_ref().map(|p| p.current_num_threads())
    }

    /// Logits [n, classes] for `input` (3 channels, NCHW or NHWC). Runs on the model's
    /// pool if it has one ([`ModelConfig::threads`]), else on the current rayon pool:
    /// call inside `pool.install()` to choose the threads. Logits do not depend on the
    /// thread count (every output is summed in one order).
    pub fn forward<'w>(&self, input: TensorView<'_>, ws: &'w mut Workspace) -> Result<&'w [f32], ModelError> {
        self.on_pool(|| self.forward_on_current_pool(input, ws))
    }

    /// [`ResNet::forward`] on the current pool whatever [`ModelConfig::threads`] says: each
    /// worker of a [`crate::BatchRunner`] runs its share on its own thread.
    pub(crate) fn forward_on_current_pool<'w>(
        &self,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
    ) -> Result<&'w [f32], ModelError> {
        self.run_sub_batches(input, ws, None)
    }

    /// Runs `f` on the model's pool if it has one, else on the current one: work beside
    /// the forward pass (decoding its images, say) then shares the model's threads
    /// instead of adding threads of its own.
    pub fn on_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// As [`ResNet::forward`] on one sub-batch of an f32 network, and shows `observer`
    /// the values of every activation tensor (the image, each conv's output) as they are
    /// made: what calibration measures.
    pub(crate) fn forward_observed(
        &self,
        input: TensorView<'_>,
        ws: &mut Workspace,
        observer: Observer<'_>,
    ) -> Result<(), ModelError> {
        let AnyNetwork::F32(network) = &self.network else {
            return Err(Error::invalid("calibration observes an f32 network").into());
        };
        if input.shape().n > self.sub_batch() {
            return Err(Error::invalid("calibration runs one sub-batch at a time").into());
        }
        self.on_pool(|| self.run_in(network, input, ws, None, Some(observer)).map(|_| ()))
    }

    /// As [`ResNet::forward`], and appends the time of every step to `steps` (one entry
    /// per step, summed over the sub-batches).
    pub fn forward_profiled<'w>(
        &self,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
        steps: &mut Vec<StepTiming>,
    ) -> Result<&'w [f32], ModelError> {
        self.on_pool(|| self.run_sub_batches(input, ws, Some(steps)))
    }

    fn run_sub_batches<'w>(
        &self,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
        mut steps: Option<&mut Vec<StepTiming>>,
    ) -> Result<&'w [f32], ModelError> {
        let shape = input.shape();
        let sub_batch = self.sub_batch();
        if shape.n <= sub_batch {
            return self.run(input, ws, steps);
        }
        shape.validate()?;
        let classes = self.net.classes;
        let mut logits = std::mem::take(&mut ws.batch_logits);
        if logits.len() < shape.n * classes {
            logits.resize(shape.n * classes)?;
        }
        let first_step = steps.as_ref().map_or(0, |s| s.len());
        let per_image = shape.image_len();
        for n0 in (0..shape.n).step_by(sub_batch) {
            let images = sub_batch.min(shape.n - n0);
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
        match &self.network {
            AnyNetwork::F32(network) => self.run_in(network, input, ws, steps, None),
            AnyNetwork::Bf16(network) => self.run_in(network, input, ws, steps, None),
            AnyNetwork::Int8(network) => self.run_in(network, input, ws, steps, None),
        }
    }

    /// The forward pass of `network`, with activations of type `T` in the arena.
    fn run_in<'w, 'r, T: ModelElement>(
        &self,
        network: &Network<T>,
        input: TensorView<'_>,
        ws: &'w mut Workspace,
        steps: Option<&'r mut Vec<StepTiming>>,
        observer: Option<Observer<'r>>,
    ) -> Result<&'w [f32], ModelError> {
        let mut rec = Recorder { steps, start: Instant::now(), lowering: 0.0, observer };
        let shape = input.shape();
        shape.validate()?;
        if shape.c != 3 {
            return Err(Error::mismatch("input channels (an RGB image)", 3, shape.c).into());
        }
        rec.begin();
        let numel = shape.numel()?;
        let x = ws.bufs.grow::<T>(Buf::Input, numel)?;
        let quant = network.input_quant;
        match input.layout() {
            Layout::Nhwc => x.iter_mut().zip(input.data()).for_each(|(d, &v)| *d = T::from_input(v, quant)),
            Layout::Nchw => {
                let hw = shape.h * shape.w;
                for n in 0..shape.n {
                    let (src, dst) = (input.image(n), &mut x[n * 3 * hw..(n + 1) * 3 * hw]);
                    for (p, px) in dst.chunks_exact_mut(3).enumerate() {
                        px.iter_mut().enumerate().for_each(|(c, d)| *d = T::from_input(src[c * hw + p], quant));
                    }
                }
            }
        }
        rec.observe(INPUT_TENSOR, input.data())?;
        rec.end("input", StepKind::Input, None, shape, shape, 0, 0);

        let mut cur = shape;
        // The stem ping-pongs between the block input and output buffers, so the
        // bottleneck buffers only ever hold the (narrower) bottleneck activations.
        for layer in &network.stem {
            cur = self.conv::<T>(layer, ws, Buf::Input, Buf::Output, cur, Fused::Relu, &mut rec)?;
            ws.bufs.swap(Buf::Input, Buf::Output);
        }
        cur = self.pool::<T>(ws, Buf::Input, Buf::Output, cur, STEM_POOL, PoolKind::Max, "maxpool", &mut rec)?;
        ws.bufs.swap(Buf::Input, Buf::Output);

        for block in &network.blocks {
            cur = self.block(block, ws, cur, &mut rec)?;
        }

        rec.begin();
        let features = self.net.features;
        ws.features.resize(shape.n * features)?;
        global_avg_pool_into(self.family, view(ws.bufs[Buf::Input].elements::<T>(), cur)?, &mut ws.features)?;
        if let Some(q) = network.features_quant {
            // The mean of u8 values, dequantized: (mean - z) * s, the subtraction exact.
            let zero = q.zero_point() as f32;
            ws.features.iter_mut().for_each(|v| *v = (*v - zero) * q.scale());
        }
        let pooled = Shape::new(shape.n, features, 1, 1);
        rec.end("avgpool", StepKind::GlobalPool, None, cur, pooled, 0, 0);

        rec.begin();
        let classes = self.net.classes;
        ws.logits.resize(shape.n * classes)?;
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

    /// One residual block from `Buf::Input` (holding `cur`) back into `Buf::Input`;
    /// returns its output shape.
    fn block<T: ModelElement>(
        &self,
        block: &Block<T>,
        ws: &mut Workspace,
        cur: Shape,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        if !T::ADDS_IN_PLACE {
            return self.block_with_residual(block, ws, cur, rec);
        }
        // The block's last conv adds its result to the shortcut in place
        // (`Epilogue::accumulate`): to the block input for an identity shortcut, to the
        // projection computed into the output buffer otherwise. Either way each output
        // line is read and written once, and no buffer holds the shortcut alone.
        let (out, t) = match (&block.downsample, &self.branch_pools) {
            (Some(ds), Some(pools)) => {
                (Buf::Output, self.run_branches_side_by_side::<T>(block, ds, pools, ws, cur, rec)?)
            }
            _ => {
                let out = self.shortcut::<T>(block, ws, cur, rec)?;
                let t = self.conv::<T>(&block.conv1, ws, Buf::Input, Buf::Mid1, cur, Fused::Relu, rec)?;
                let t = self.conv::<T>(&block.conv2, ws, Buf::Mid1, Buf::Mid2, t, Fused::Relu, rec)?;
                (out, t)
            }
        };
        let out_shape = self.conv::<T>(&block.conv3, ws, Buf::Mid2, out, t, Fused::AddRelu, rec)?;
        if out == Buf::Output {
            ws.bufs.swap(Buf::Input, Buf::Output);
        }
        Ok(out_shape)
    }

    /// A block's shortcut, one after the other with its other branch: D's pool (into
    /// `Mid2`, dead until conv2 writes it) and the projection into `Buf::Output`, or the
    /// subsampled identity into `Buf::Output`, or the block input itself. Returns the
    /// buffer that holds it.
    fn shortcut<T: ModelElement>(
        &self,
        block: &Block<T>,
        ws: &mut Workspace,
        cur: Shape,
        rec: &mut Recorder<'_>,
    ) -> Result<Buf, ModelError> {
        Ok(match (&block.downsample, &block.subsample) {
            (Some(Downsample { pool, conv }), _) => {
                let (src, src_shape) = match pool {
                    Some(name) => {
                        let avg = PoolKind::Average { count_include_pad: false };
                        (Buf::Mid2, self.pool::<T>(ws, Buf::Input, Buf::Mid2, cur, SHORTCUT_POOL, avg, name, rec)?)
                    }
                    None => (Buf::Input, cur),
                };
                self.conv::<T>(conv, ws, src, Buf::Output, src_shape, Fused::None, rec)?;
                Buf::Output
            }
            (None, Some(name)) => {
                self.pool::<T>(ws, Buf::Input, Buf::Output, cur, SUBSAMPLE, PoolKind::Max, name, rec)?;
                Buf::Output
            }
            (None, None) => Buf::Input,
        })
    }

    /// One residual block whose last conv reads the shortcut as its epilogue's residual
    /// (int8, where the shortcut has its own quantization): the shortcut stays in the
    /// block input, or goes to the output buffer (projection, subsampling), and the last
    /// conv writes the buffer the shortcut is not in (the first conv's, dead by then).
    fn block_with_residual<T: ModelElement>(
        &self,
        block: &Block<T>,
        ws: &mut Workspace,
        cur: Shape,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        let shortcut = self.shortcut::<T>(block, ws, cur, rec)?;
        let t = self.conv::<T>(&block.conv1, ws, Buf::Input, Buf::Mid1, cur, Fused::Relu, rec)?;
        let t = self.conv::<T>(&block.conv2, ws, Buf::Mid1, Buf::Mid2, t, Fused::Relu, rec)?;
        let out = if shortcut == Buf::Input { Buf::Output } else { Buf::Mid1 };
        let layer = &block.conv3;
        let out_shape = layer.op.output_shape(t)?;
        rec.begin();
        let numel = out_shape.numel()?;
        let [src, residual, dst] = ws.bufs.disjoint([Buf::Mid2, shortcut, out])?;
        let dst = dst.grow_elements::<T>(numel)?;
        let epilogue =
            Epilogue { residual: Some(view(residual.elements::<T>(), out_shape)?), accumulate: false, relu: true };
        let mut output = TensorViewMut::new(out_shape, Layout::Nhwc, dst)?;
        layer.op.forward(view(src.elements::<T>(), t)?, &mut output, epilogue, &mut ws.scratch)?;
        rec.observe(&layer.name, output.data())?;
        let macs = Self::macs(layer, out_shape)?;
        rec.end(&layer.name, StepKind::Conv(layer.kind), Some(layer.path), t, out_shape, macs, 0);
        ws.bufs.swap(Buf::Input, out);
        Ok(out_shape)
    }

    /// Runs one conv from buffer `src` into `dst` with `fused` in its store, returns its
    /// output shape.
    #[allow(clippy::too_many_arguments)]
    fn conv<T: ModelElement>(
        &self,
        layer: &ConvLayer<T>,
        ws: &mut Workspace,
        src: Buf,
        dst: Buf,
        in_shape: Shape,
        fused: Fused,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        let out_shape = layer.op.output_shape(in_shape)?;
        rec.begin();
        let (s, d) = ws.bufs.split::<T>(src, dst, out_shape.numel()?)?;
        rec.lowering = Self::conv_slices(layer, s, in_shape, d, out_shape, fused, &mut ws.scratch)?.as_secs_f64();
        rec.observe(&layer.name, &d[..out_shape.numel()?])?;
        let scratch = 4 * layer.op.scratch_len(in_shape)?;
        let macs = Self::macs(layer, out_shape)?;
        rec.end(&layer.name, StepKind::Conv(layer.kind), Some(layer.path), in_shape, out_shape, macs, scratch);
        Ok(out_shape)
    }

    /// One conv from `src` (holding `in_shape`) into the first elements of `dst`; returns
    /// its im2col time.
    fn conv_slices<T: ModelElement>(
        layer: &ConvLayer<T>,
        src: &[T],
        in_shape: Shape,
        dst: &mut [T],
        out_shape: Shape,
        fused: Fused,
        scratch: &mut convkit_tensor::AlignedVec,
    ) -> Result<std::time::Duration, ModelError> {
        let input = view(src, in_shape)?;
        let numel = out_shape.numel()?;
        let len = dst.len();
        let d = dst.get_mut(..numel).ok_or_else(|| Error::mismatch("arena buffer length", numel, len))?;
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, d)?;
        Ok(layer.op.forward_timed(input, &mut out, fused.epilogue(), scratch)?)
    }

    fn macs<T: ModelElement>(layer: &ConvLayer<T>, out_shape: Shape) -> Result<u64, ModelError> {
        Ok((out_shape.numel()? * layer.op.filter().reduction_len()) as u64)
    }

    /// A downsampling block's shortcut (D's pool and the projection, into the output
    /// buffer) on one single-thread pool and its conv1 and conv2 (into `Mid2`) on the
    /// other, side by side; returns conv2's output shape. Recorded as one step.
    fn run_branches_side_by_side<T: ModelElement>(
        &self,
        block: &Block<T>,
        ds: &Downsample<T>,
        pools: &[rayon::ThreadPool; 2],
        ws: &mut Workspace,
        cur: Shape,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        rec.begin();
        let pooled_shape = match ds.pool {
            Some(_) => convkit_pool::output_shape(cur, SHORTCUT_POOL)?,
            None => cur,
        };
        let short_out = ds.conv.op.output_shape(pooled_shape)?;
        let t1 = block.conv1.op.output_shape(cur)?;
        let t2 = block.conv2.op.output_shape(t1)?;
        let macs = Self::macs(&ds.conv, short_out)? + Self::macs(&block.conv1, t1)? + Self::macs(&block.conv2, t2)?;
        let [input, output, mid1, mid2, pooled] =
            ws.bufs.disjoint([Buf::Input, Buf::Output, Buf::Mid1, Buf::Mid2, Buf::Pooled])?;
        let input: &[T] = input.elements::<T>();
        let output = output.grow_elements::<T>(short_out.numel()?)?;
        let mid1 = mid1.grow_elements::<T>(t1.numel()?)?;
        let mid2 = mid2.grow_elements::<T>(t2.numel()?)?;
        let pooled = pooled.grow_elements::<T>(if ds.pool.is_some() { pooled_shape.numel()? } else { 0 })?;
        let (main_scratch, short_scratch) = (&mut ws.scratch, &mut ws.branch_scratch);
        let mut main = || {
            pools[0].install(|| -> Result<(), ModelError> {
                Self::conv_slices(&block.conv1, input, cur, mid1, t1, Fused::Relu, main_scratch)?;
                Self::conv_slices(&block.conv2, mid1, t1, mid2, t2, Fused::Relu, main_scratch)?;
                Ok(())
            })
        };
        let shortcut = || {
            pools[1].install(|| -> Result<(), ModelError> {
                let src: &[T] = match ds.pool {
                    Some(_) => {
                        let mut out = TensorViewMut::new(pooled_shape, Layout::Nhwc, &mut pooled[..])?;
                        let avg = PoolKind::Average { count_include_pad: false };
                        pool2d_into(self.family, view(input, cur)?, SHORTCUT_POOL, avg, &mut out)?;
                        pooled
                    }
                    None => input,
                };
                Self::conv_slices(&ds.conv, src, pooled_shape, output, short_out, Fused::None, short_scratch)?;
                Ok(())
            })
        };
        let (main, shortcut) = std::thread::scope(|s| {
            let shortcut = s.spawn(shortcut);
            (main(), shortcut.join())
        });
        shortcut.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        main?;
        rec.end(&block.branches_step, StepKind::Branches, None, cur, t2, macs, 0);
        Ok(t2)
    }

    #[allow(clippy::too_many_arguments)]
    fn pool<T: ModelElement>(
        &self,
        ws: &mut Workspace,
        src: Buf,
        dst: Buf,
        in_shape: Shape,
        window: convkit_tensor::Window,
        kind: PoolKind,
        name: &str,
        rec: &mut Recorder<'_>,
    ) -> Result<Shape, ModelError> {
        rec.begin();
        let out_shape = convkit_pool::output_shape(in_shape, window)?;
        let (s, d) = ws.bufs.split::<T>(src, dst, out_shape.numel()?)?;
        let mut out = TensorViewMut::new(out_shape, Layout::Nhwc, d)?;
        pool2d_into(self.family, view(s, in_shape)?, window, kind, &mut out)?;
        let step = if kind == PoolKind::Max { StepKind::MaxPool } else { StepKind::AvgPool };
        rec.end(name, step, None, in_shape, out_shape, 0, 0);
        Ok(out_shape)
    }
}
