//! The ResNet family of "Bag of Tricks" as data: one spec drives construction, counting,
//! weight naming and the forward pass.

use convkit_tensor::{Error, Result, Window};
use std::fmt;

/// The four ResNet-50 variants of He et al., 2018.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum Variant {
    /// The original ResNet-50 (v1): 7x7/2 stem, stride on the first 1x1 conv of a downsampling block.
    A,
    /// The stride moves to the 3x3 conv (torchvision's resnet50).
    B,
    /// B with the deep stem: three 3x3 convs.
    C,
    /// C with the average-pool shortcut (timm's resnet50d).
    D,
}

impl Variant {
    /// The four variants, in order.
    pub const ALL: [Variant; 4] = [Variant::A, Variant::B, Variant::C, Variant::D];

    /// Parses "a".."d" (any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a" => Ok(Variant::A),
            "b" => Ok(Variant::B),
            "c" => Ok(Variant::C),
            "d" => Ok(Variant::D),
            other => Err(Error::invalid(format!("unknown variant '{other}': expected one of a, b, c, d"))),
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Variant> {
        Variant::parse(s)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::A => "A",
            Variant::B => "B",
            Variant::C => "C",
            Variant::D => "D",
        })
    }
}

/// The stem before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// 7x7/2 conv 3->64 (A, B).
    Classic,
    /// 3x3/2 3->32, 3x3 32->32, 3x3 32->64 (C, D).
    Deep,
}

/// Where a downsampling bottleneck puts its stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrideAt {
    /// On the first 1x1 conv (A).
    First1x1,
    /// On the 3x3 conv (B, C, D).
    Conv3x3,
}

/// The shortcut of a block whose shape changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// 1x1 conv with the block's stride (A, B, C).
    StridedConv,
    /// 2x2/2 average pool (ceil mode, padding not counted) when the stride is 2, then a
    /// 1x1 conv with stride 1 (D).
    AvgPoolConv,
}

/// A ResNet with bottleneck blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetSpec {
    /// Residual blocks per stage.
    pub depths: [usize; 4],
    /// The stem.
    pub stem: Stem,
    /// Where a downsampling block puts its stride.
    pub stride_at: StrideAt,
    /// The projection shortcut of a downsampling block.
    pub shortcut: Shortcut,
    /// Number of classes of the classifier.
    pub classes: usize,
}

/// Kind of a conv layer, for counting and profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvKind {
    /// A conv of the stem (7x7, or the deep stem's 3x3s).
    Stem,
    /// A 1x1 conv (bottleneck or projection).
    Conv1x1,
    /// A 3x3 conv of a bottleneck.
    Conv3x3,
}

/// One conv layer followed by batch norm: its weight keys and geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvSpec {
    /// Key prefix of the conv weight ("layer1.0.conv1" -> "layer1.0.conv1.weight").
    pub conv: String,
    /// Key prefix of its batch norm.
    pub bn: String,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride along both axes.
    pub stride: usize,
    /// What kind of layer it is (for counts and profiles).
    pub kind: ConvKind,
}

impl ConvSpec {
    /// Its window: kernel, stride, and the padding of a same-size conv (kernel / 2).
    pub fn window(&self) -> Window {
        Window::square(self.kernel, self.stride, self.kernel / 2)
    }
    /// Number of weights (co x ci x kernel x kernel).
    pub fn weight_len(&self) -> usize {
        self.co * self.ci * self.kernel * self.kernel
    }
}

/// A bottleneck block: 1x1 reduce, 3x3, 1x1 expand (+ shortcut), ReLU after the add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// The block's key prefix, such as `layer2.0`.
    pub name: String,
    /// The first 1x1 conv.
    pub conv1: ConvSpec,
    /// The 3x3 conv.
    pub conv2: ConvSpec,
    /// The last 1x1 conv (its epilogue adds the shortcut).
    pub conv3: ConvSpec,
    /// None: identity shortcut.
    pub downsample: Option<DownsampleSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// The projection shortcut of a downsampling block.
pub struct DownsampleSpec {
    /// 2x2/2 ceil-mode average pool before the conv (D, stride 2 only).
    pub pool: bool,
    /// The 1x1 projection conv.
    pub conv: ConvSpec,
}

/// Every layer of a network, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The stem's convs.
    pub stem: Vec<ConvSpec>,
    /// The residual blocks, in order.
    pub blocks: Vec<BlockSpec>,
    /// Channels into the classifier.
    pub features: usize,
    /// Classes out of it.
    pub classes: usize,
}

/// The stem's max pool.
pub const STEM_POOL: Window = Window::square(3, 2, 1);
/// D's shortcut pool.
pub const SHORTCUT_POOL: Window = Window::square(2, 2, 0).with_ceil_mode(true);

impl ResNetSpec {
    /// A variant with `depths` blocks per stage and 1000 classes.
    pub fn new(variant: Variant, depths: [usize; 4]) -> Self {
        let (stem, stride_at, shortcut) = match variant {
            Variant::A => (Stem::Classic, StrideAt::First1x1, Shortcut::StridedConv),
            Variant::B => (Stem::Classic, StrideAt::Conv3x3, Shortcut::StridedConv),
            Variant::C => (Stem::Deep, StrideAt::Conv3x3, Shortcut::StridedConv),
            Variant::D => (Stem::Deep, StrideAt::Conv3x3, Shortcut::AvgPoolConv),
        };
        ResNetSpec { depths, stem, stride_at, shortcut, classes: 1000 }
    }
    /// ResNet-50 (3, 4, 6, 3 blocks).
    pub fn resnet50(variant: Variant) -> Self {
        Self::new(variant, [3, 4, 6, 3])
    }
    /// ResNet-101 (3, 4, 23, 3 blocks).
    pub fn resnet101(variant: Variant) -> Self {
        Self::new(variant, [3, 4, 23, 3])
    }
    /// ResNet-152 (3, 8, 36, 3 blocks).
    pub fn resnet152(variant: Variant) -> Self {
        Self::new(variant, [3, 8, 36, 3])
    }
    /// ResNet-50, -101 or -152 of `variant`; any other depth is an error naming it.
    pub fn with_depth(variant: Variant, depth: usize) -> Result<Self> {
        match depth {
            50 => Ok(Self::resnet50(variant)),
            101 => Ok(Self::resnet101(variant)),
            152 => Ok(Self::resnet152(variant)),
            other => Err(Error::invalid(format!("unknown depth {other}: expected 50, 101 or 152"))),
        }
    }
    /// The depths [`ResNetSpec::with_depth`] builds.
    pub const DEPTHS: [usize; 3] = [50, 101, 152];

    /// Layers with weights on the main path: three convs per bottleneck block, the stem
    /// (counted as one, as the names ResNet-50/101/152 count it) and the classifier.
    pub fn depth(&self) -> usize {
        3 * self.depths.iter().sum::<usize>() + 2
    }

    /// The variant whose stem, stride placement and shortcut this spec has, if any.
    pub fn variant(&self) -> Option<Variant> {
        Variant::ALL.into_iter().find(|&v| {
            let s = ResNetSpec::new(v, self.depths);
            (s.stem, s.stride_at, s.shortcut) == (self.stem, self.stride_at, self.shortcut)
        })
    }
}

impl fmt::Display for ResNetSpec {
    /// "ResNet-50-D"; a spec of none of the four variants is "ResNet-50 (custom)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.variant() {
            Some(v) => write!(f, "ResNet-{}-{v}", self.depth()),
            None => write!(f, "ResNet-{} (custom)", self.depth()),
        }
    }
}

impl ResNetSpec {
    /// Every layer with its weight keys: torchvision's names for the classic stem and
    /// strided-conv shortcut (downsample.0 conv, .1 BN), timm's for the deep stem
    /// (conv1.0/.1/.3/.4/.6, bn1) and the pooled shortcut (downsample.1 conv, .2 BN).
    pub fn layers(&self) -> NetSpec {
        let conv = |conv: String, bn: String, ci, co, kernel, stride, kind| ConvSpec {
            conv,
            bn,
            ci,
            co,
            kernel,
            stride,
            kind,
        };
        let stem = match self.stem {
            Stem::Classic => vec![conv("conv1".into(), "bn1".into(), 3, 64, 7, 2, ConvKind::Stem)],
            Stem::Deep => vec![
                conv("conv1.0".into(), "conv1.1".into(), 3, 32, 3, 2, ConvKind::Stem),
                conv("conv1.3".into(), "conv1.4".into(), 32, 32, 3, 1, ConvKind::Stem),
                conv("conv1.6".into(), "bn1".into(), 32, 64, 3, 1, ConvKind::Stem),
            ],
        };
        let mut blocks = Vec::new();
        let mut ci = 64;
        for (stage, &depth) in self.depths.iter().enumerate() {
            let width = 64 << stage;
            let co = width * 4;
            for b in 0..depth {
                let name = format!("layer{}.{b}", stage + 1);
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                let (s1, s2) = match self.stride_at {
                    StrideAt::First1x1 => (stride, 1),
                    StrideAt::Conv3x3 => (1, stride),
                };
                let c = |i: usize, ci, co, k, s, kind| {
                    conv(format!("{name}.conv{i}"), format!("{name}.bn{i}"), ci, co, k, s, kind)
                };
                let downsample = (b == 0).then(|| match self.shortcut {
                    Shortcut::StridedConv => DownsampleSpec {
                        pool: false,
                        conv: conv(
                            format!("{name}.downsample.0"),
                            format!("{name}.downsample.1"),
                            ci,
                            co,
                            1,
                            stride,
                            ConvKind::Conv1x1,
                        ),
                    },
                    Shortcut::AvgPoolConv => DownsampleSpec {
                        pool: stride == 2,
                        conv: conv(
                            format!("{name}.downsample.1"),
                            format!("{name}.downsample.2"),
                            ci,
                            co,
                            1,
                            1,
                            ConvKind::Conv1x1,
                        ),
                    },
                });
                blocks.push(BlockSpec {
                    conv1: c(1, ci, width, 1, s1, ConvKind::Conv1x1),
                    conv2: c(2, width, width, 3, s2, ConvKind::Conv3x3),
                    conv3: c(3, width, co, 1, 1, ConvKind::Conv1x1),
                    downsample,
                    name,
                });
                ci = co;
            }
        }
        NetSpec { stem, blocks, features: ci, classes: self.classes }
    }
}

/// Parameter and multiply-add counts of a network at one input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Conv weights, BN weight and bias, FC weight and bias.
    pub params: u64,
    /// Multiply-adds of the 1x1 convs (projections included).
    pub macs_1x1: u64,
    /// Multiply-adds of the bottleneck 3x3 convs.
    pub macs_3x3: u64,
    /// Multiply-adds of the stem.
    pub macs_stem: u64,
    /// Multiply-adds of the classifier.
    pub macs_fc: u64,
}

impl Counts {
    /// All multiply-adds.
    pub fn macs(&self) -> u64 {
        self.macs_1x1 + self.macs_3x3 + self.macs_stem + self.macs_fc
    }
    /// 2 FLOPs per MAC.
    pub fn flops(&self) -> u64 {
        2 * self.macs()
    }
}

impl NetSpec {
    /// Every conv in forward order.
    pub fn convs(&self) -> impl Iterator<Item = &ConvSpec> {
        self.stem.iter().chain(
            self.blocks.iter().flat_map(|b| b.downsample.iter().map(|d| &d.conv).chain([&b.conv1, &b.conv2, &b.conv3])),
        )
    }

    /// The same network computing only the outputs that are read: a block whose output
    /// feeds only stride-2 1x1 convs (the next block's conv1 and strided shortcut, as in
    /// A) computes its output at the even positions alone, a quarter of them: its 3x3 conv
    /// and projection shortcut take twice their stride, and the next block's strided 1x1
    /// convs take stride 1. Returns that network and, per block, whether it reads its
    /// identity shortcut at every other position. Logits are unchanged; A then needs
    /// about 10% fewer MACs. (OpenVINO does the same.)
    pub fn reduced_positions(&self) -> (NetSpec, Vec<bool>) {
        let mut net = self.clone();
        let mut subsample = vec![false; net.blocks.len()];
        let last = net.blocks.len().saturating_sub(1);
        for (i, reads_shortcut_strided) in subsample.iter_mut().enumerate().take(last) {
            let next = &net.blocks[i + 1];
            let reads_every_other = next.conv1.kernel == 1
                && next.conv1.stride == 2
                && next.downsample.as_ref().is_some_and(|d| !d.pool && d.conv.kernel == 1 && d.conv.stride == 2);
            // A pooled shortcut of its own would need its pool strided too: not done.
            let own_shortcut_strides = net.blocks[i].downsample.as_ref().is_none_or(|d| !d.pool);
            if !reads_every_other || !own_shortcut_strides {
                continue;
            }
            let next = &mut net.blocks[i + 1];
            next.conv1.stride = 1;
            next.downsample.as_mut().expect("checked above").conv.stride = 1;
            let block = &mut net.blocks[i];
            block.conv2.stride *= 2;
            match block.downsample.as_mut() {
                Some(d) => d.conv.stride *= 2,
                None => *reads_shortcut_strided = true,
            }
        }
        (net, subsample)
    }

    /// Exact counts for an input of h x w.
    pub fn counts(&self, h: usize, w: usize) -> Result<Counts> {
        let mut c = Counts::default();
        let mut conv_out = |spec: &ConvSpec, hw: (usize, usize)| -> Result<(usize, usize)> {
            let (oh, ow) = spec.window().output_hw(hw.0, hw.1)?;
            let overflow = || Error::overflow(format!("MACs of {} at {}x{} outputs", spec.conv, oh, ow));
            let macs = [oh, ow, spec.weight_len()]
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .ok_or_else(overflow)?;
            let total = match spec.kind {
                ConvKind::Stem => &mut c.macs_stem,
                ConvKind::Conv1x1 => &mut c.macs_1x1,
                ConvKind::Conv3x3 => &mut c.macs_3x3,
            };
            *total = total.checked_add(macs).ok_or_else(overflow)?;
            c.params += (spec.weight_len() + 2 * spec.co) as u64;
            Ok((oh, ow))
        };
        let mut hw = (h, w);
        for s in &self.stem {
            hw = conv_out(s, hw)?;
        }
        hw = STEM_POOL.output_hw(hw.0, hw.1)?;
        for b in &self.blocks {
            if let Some(d) = &b.downsample {
                let pooled = if d.pool { SHORTCUT_POOL.output_hw(hw.0, hw.1)? } else { hw };
                conv_out(&d.conv, pooled)?;
            }
            let t = conv_out(&b.conv1, hw)?;
            let t = conv_out(&b.conv2, t)?;
            hw = conv_out(&b.conv3, t)?;
        }
        c.macs_fc = (self.features * self.classes) as u64;
        c.params += (self.features * self.classes + self.classes) as u64;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_counts_at_224() {
        let want = [
            (Variant::A, 25_557_032, 3_857_973_248, 1_888_223_232, 118_013_952),
            (Variant::B, 25_557_032, 4_089_184_256, 2_119_434_240, 118_013_952),
            (Variant::C, 25_576_264, 4_328_824_832, 2_119_434_240, 357_654_528),
            (Variant::D, 25_576_264, 4_328_824_832, 2_119_434_240, 357_654_528),
        ];
        for (v, params, macs, macs_1x1, stem) in want {
            let c = ResNetSpec::resnet50(v).layers().counts(224, 224).unwrap();
            assert_eq!(c.params, params, "{v} params");
            assert_eq!(c.macs(), macs, "{v} MACs");
            assert_eq!(c.macs_1x1, macs_1x1, "{v} 1x1 MACs");
            assert_eq!(c.macs_3x3, 1_849_688_064, "{v} 3x3 MACs");
            assert_eq!(c.macs_stem, stem, "{v} stem MACs");
            assert_eq!(c.macs_fc, 2_048_000, "{v} fc MACs");
        }
    }

    #[test]
    fn reduced_positions_save_a_quarter_of_the_last_blocks_in_a_only() {
        let a = ResNetSpec::resnet50(Variant::A).layers();
        let (reduced, subsample) = a.reduced_positions();
        // The last block of stages 1-3 (blocks 2, 6, 12) subsample their identity shortcut.
        let which: Vec<usize> = subsample.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i).collect();
        assert_eq!(which, vec![2, 6, 12]);
        let (full, less) = (a.counts(224, 224).unwrap().macs(), reduced.counts(224, 224).unwrap().macs());
        assert_eq!(full - less, 375_717_888, "{full} - {less}");
        for v in [Variant::B, Variant::C, Variant::D] {
            let net = ResNetSpec::resnet50(v).layers();
            assert_eq!(net.reduced_positions().0, net, "{v} reads every position");
        }
    }

    #[test]
    fn deeper_resnets_from_the_same_spec() {
        // torchvision resnet101 / resnet152 parameter counts.
        assert_eq!(ResNetSpec::resnet101(Variant::B).layers().counts(224, 224).unwrap().params, 44_549_160);
        assert_eq!(ResNetSpec::resnet152(Variant::B).layers().counts(224, 224).unwrap().params, 60_192_808);
    }
}
