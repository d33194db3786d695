//! The int8 network: post-training quantization of a float ResNet (each activation
//! tensor's range measured over calibration images, each conv's BN-folded weights
//! quantized per output channel) and its safetensors file.
//!
//! Every activation tensor has one quantization, shared by all its readers: the image
//! (`input`), and each conv's output, named by the conv. A pool's output keeps its input's
//! quantization (max is exact on the u8 grid; a mean stays inside its input's range).

use crate::spec::{NetSpec, ResNetSpec};
use crate::weights::{Rng, WeightSource, WeightTensor, WeightsMetadata};
use crate::ModelError;
use convkit_tensor::{quantize_per_channel, Precision, Quant, WEIGHT_MAX};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

/// The name of the network input's activation tensor.
pub(crate) const INPUT_TENSOR: &str = "input";

/// Share of an activation tensor's values [`RangeMethod::Percentile`] leaves outside the
/// range at each end, per image: NNCF's default outlier probability.
pub const PERCENTILE_OUTLIER: f64 = 1e-4;

/// How an activation tensor's range is measured over the calibration images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RangeMethod {
    /// The smallest and the largest value seen in any image.
    #[cfg_attr(feature = "clap", value(name = "minmax"))]
    MinMax,
    /// Per image, the quantiles [`PERCENTILE_OUTLIER`] and 1 - that; over the images, the
    /// smallest low and the largest high one. Clips the rare outliers, so the common
    /// values get a finer grid.
    #[default]
    Percentile,
}

impl RangeMethod {
    /// The name the CLI and the file's metadata use.
    pub const fn name(self) -> &'static str {
        match self {
            RangeMethod::MinMax => "minmax",
            RangeMethod::Percentile => "percentile",
        }
    }
}

impl std::fmt::Display for RangeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The range statistics of one activation tensor over the calibration images so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorRange {
    min: f32,
    max: f32,
    low_quantile: f32,
    high_quantile: f32,
}

/// Collects the range of every activation tensor a forward pass shows it.
#[derive(Debug, Default)]
pub(crate) struct RangeCollector {
    ranges: BTreeMap<String, TensorRange>,
    sorted: Vec<f32>,
}

impl RangeCollector {
    /// Adds one image's values of `tensor`. A value that is not finite is an error naming
    /// the tensor: the float network overflowed, and no range would hold it.
    pub(crate) fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<(), ModelError> {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::weights(format!(
                "calibration: activation '{tensor}' holds {} at index {i}; no int8 range can hold it",
                values[i]
            )));
        }
        let Some(&first) = values.first() else { return Ok(()) };
        let (min, max) = values.iter().fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        self.sorted.clear();
        self.sorted.extend_from_slice(values);
        let last = values.len() - 1;
        let at = |p: f64| ((p * last as f64).round() as usize).min(last);
        let low_quantile = *self.sorted.select_nth_unstable_by(at(PERCENTILE_OUTLIER), f32::total_cmp).1;
        let high_quantile = *self.sorted.select_nth_unstable_by(at(1.0 - PERCENTILE_OUTLIER), f32::total_cmp).1;
        let new = TensorRange { min, max, low_quantile, high_quantile };
        self.ranges
            .entry(tensor.to_string())
            .and_modify(|r| {
                *r = TensorRange {
                    min: r.min.min(min),
                    max: r.max.max(max),
                    low_quantile: r.low_quantile.min(low_quantile),
                    high_quantile: r.high_quantile.max(high_quantile),
                }
            })
            .or_insert(new);
        Ok(())
    }

    /// Each tensor's quantization under `method`.
    pub(crate) fn quants(&self, method: RangeMethod) -> Result<BTreeMap<String, Quant>, ModelError> {
        self.ranges
            .iter()
            .map(|(name, r)| {
                let (lo, hi) = match method {
                    RangeMethod::MinMax => (r.min, r.max),
                    RangeMethod::Percentile => (r.low_quantile, r.high_quantile),
                };
                let q =
                    Quant::from_range(lo, hi).map_err(|e| ModelError::weights(format!("activation '{name}': {e}")))?;
                Ok((name.clone(), q))
            })
            .collect()
    }
}

/// One conv of the int8 network: BN folded, weights quantized per output channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QuantizedConv {
    /// OIHW, in -127..=127.
    pub(crate) weights: Vec<i8>,
    /// One per output channel: `w = scale * q`.
    pub(crate) scales: Vec<f32>,
    /// The folded bias, f32.
    pub(crate) bias: Vec<f32>,
}

/// A calibrated int8 network: each conv's quantized weights and f32 bias, each activation
/// tensor's quantization, the f32 classifier, and how it was calibrated. Made by
/// [`crate::ModelConfig::calibrate`], written and read as safetensors
/// ([`Int8Weights::save`], [`Int8Weights::load`]), built by
/// [`crate::ModelConfig::build_int8`].
#[derive(Debug, Clone)]
pub struct Int8Weights {
    spec: ResNetSpec,
    convs: BTreeMap<String, QuantizedConv>,
    activations: BTreeMap<String, Quant>,
    fc_weight: WeightTensor,
    fc_bias: WeightTensor,
    metadata: WeightsMetadata,
}

/// The safetensors keys of an activation tensor's scale and zero point.
fn activation_keys(tensor: &str) -> (String, String) {
    if tensor == INPUT_TENSOR {
        (format!("{INPUT_TENSOR}.scale"), format!("{INPUT_TENSOR}.zero_point"))
    } else {
        (format!("{tensor}.output_scale"), format!("{tensor}.output_zero_point"))
    }
}

/// Every key of the int8 file of `net`, with its shape and dtype.
pub fn int8_expected_keys(net: &NetSpec) -> Vec<(String, Vec<usize>, Dtype)> {
    let mut keys = Vec::new();
    let quant = |keys: &mut Vec<_>, tensor: &str| {
        let (scale, zero) = activation_keys(tensor);
        keys.push((scale, vec![1], Dtype::F32));
        keys.push((zero, vec![1], Dtype::I32));
    };
    quant(&mut keys, INPUT_TENSOR);
    for c in net.convs() {
        keys.push((format!("{}.weight", c.conv), vec![c.co, c.ci, c.kernel, c.kernel], Dtype::I8));
        keys.push((format!("{}.weight_scale", c.conv), vec![c.co], Dtype::F32));
        keys.push((format!("{}.bias", c.conv), vec![c.co], Dtype::F32));
        quant(&mut keys, &c.conv);
    }
    keys.push(("fc.weight".into(), vec![net.classes, net.features], Dtype::F32));
    keys.push(("fc.bias".into(), vec![net.classes], Dtype::F32));
    keys
}

impl Int8Weights {
    /// Quantizes the float `weights`: each conv's BN folded in and its weights quantized per
    /// output channel (symmetric, -127..=127), with `activations`, the quantization of
    /// every activation tensor (the image, `"input"`, and each conv's output). `recipe`
    /// says how the activations were calibrated; it goes into the file's metadata.
    pub fn quantize(
        mut weights: impl WeightSource,
        activations: BTreeMap<String, Quant>,
        recipe: String,
    ) -> Result<Self, ModelError> {
        let spec = weights.spec();
        let net = spec.layers();
        let mut convs = BTreeMap::new();
        for c in net.convs() {
            let (folded, bias) = crate::layers::fold_bn(c, &mut weights)?;
            let (q, scales) =
                quantize_per_channel(&folded, c.co).map_err(|e| ModelError::weights(format!("{}: {e}", c.conv)))?;
            convs.insert(c.conv.clone(), QuantizedConv { weights: q, scales, bias });
        }
        let (fc_weight, fc_bias) = (weights.take("fc.weight")?, weights.take("fc.bias")?);
        let metadata = WeightsMetadata {
            variant: spec.variant(),
            depth: Some(spec.depth()),
            precision: Some(Precision::Int8),
            calibration: Some(recipe),
            ..WeightsMetadata::default()
        };
        let weights = Int8Weights { spec, convs, activations, fc_weight, fc_bias, metadata };
        weights.check_activations()?;
        Ok(weights)
    }

    /// The network the weights are for.
    pub fn spec(&self) -> ResNetSpec {
        self.spec
    }

    /// What the file says of itself: the network, the precision, the calibration recipe.
    pub fn metadata(&self) -> &WeightsMetadata {
        &self.metadata
    }

    /// The quantization of activation tensor `tensor` (`"input"`, or a conv's name for its
    /// output), if the network has it.
    pub fn activation(&self, tensor: &str) -> Option<Quant> {
        self.activations.get(tensor).copied()
    }

    /// The quantized conv `name`.
    fn conv(&self, name: &str) -> Result<&QuantizedConv, ModelError> {
        self.convs.get(name).ok_or_else(|| Self::missing_conv(name))
    }

    /// Removes and returns the quantized conv `name`: a build frees each conv once it is
    /// packed.
    pub(crate) fn take_conv(&mut self, name: &str) -> Result<QuantizedConv, ModelError> {
        self.convs.remove(name).ok_or_else(|| Self::missing_conv(name))
    }

    fn missing_conv(name: &str) -> ModelError {
        ModelError::MissingKey { key: format!("{name}.weight"), shape: Vec::new() }
    }

    /// The quantization of activation tensor `tensor`, or the error naming its key.
    pub(crate) fn quant(&self, tensor: &str) -> Result<Quant, ModelError> {
        self.activation(tensor).ok_or_else(|| ModelError::MissingKey { key: activation_keys(tensor).0, shape: vec![1] })
    }

    /// The f32 classifier's weight and bias.
    pub(crate) fn fc(&self) -> (&WeightTensor, &WeightTensor) {
        (&self.fc_weight, &self.fc_bias)
    }

    /// Every activation tensor of the network has a quantization, and none other.
    fn check_activations(&self) -> Result<(), ModelError> {
        let net = self.spec.layers();
        let names: Vec<&str> = std::iter::once(INPUT_TENSOR).chain(net.convs().map(|c| c.conv.as_str())).collect();
        for name in &names {
            self.quant(name)?;
        }
        if let Some(extra) = self.activations.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(ModelError::weights(format!("activation quantization for '{extra}', which the network lacks")));
        }
        Ok(())
    }

    /// The safetensors bytes: per conv its s8 `weight` (OIHW), f32 `weight_scale` and
    /// `bias`, and its output's `output_scale` (f32) and `output_zero_point` (i32); the
    /// image's `input.scale` and `input.zero_point`; the f32 `fc.weight` and `fc.bias`;
    /// the metadata (network, `precision=int8`, the calibration recipe).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (tensor, q) in &self.activations {
            let (scale, zero) = activation_keys(tensor);
            tensors.push((scale, Dtype::F32, vec![1], q.scale().to_le_bytes().to_vec()));
            tensors.push((zero, Dtype::I32, vec![1], q.zero_point().to_le_bytes().to_vec()));
        }
        for c in self.spec.layers().convs() {
            let conv = self.conv(&c.conv)?;
            let weights = conv.weights.iter().map(|&w| w as u8).collect();
            tensors.push((format!("{}.weight", c.conv), Dtype::I8, vec![c.co, c.ci, c.kernel, c.kernel], weights));
            tensors.push((format!("{}.weight_scale", c.conv), Dtype::F32, vec![c.co], f32_bytes(&conv.scales)));
            tensors.push((format!("{}.bias", c.conv), Dtype::F32, vec![c.co], f32_bytes(&conv.bias)));
        }
        for (key, t) in [("fc.weight", &self.fc_weight), ("fc.bias", &self.fc_bias)] {
            tensors.push((key.into(), Dtype::F32, t.shape.clone(), f32_bytes(&t.data)));
        }
        let views = tensors
            .iter()
            .map(|(k, dtype, shape, bytes)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (k.as_str(), v))
                    .map_err(|e| ModelError::weights(format!("key '{k}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize(views, Some(self.metadata.to_header()))
            .map_err(|e| ModelError::weights(format!("serialize: {e}")))
    }

    /// Writes the int8 safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        std::fs::write(path, self.to_safetensors_bytes()?).map_err(|e| ModelError::io(path, e))
    }

    /// Reads an int8 file written by [`Int8Weights::save`] for `spec`; errors name the
    /// file and the key: float weights (not calibrated), another network, a missing or
    /// misshapen key, a weight of -128, a scale that is not finite and positive, a zero
    /// point outside 0..=255.
    pub fn load(spec: ResNetSpec, path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_safetensors_bytes(spec, &bytes).map_err(|e| e.in_file(path))
    }

    /// Parses the bytes of an int8 file for `spec` (see [`Int8Weights::load`]).
    pub fn from_safetensors_bytes(spec: ResNetSpec, bytes: &[u8]) -> Result<Self, ModelError> {
        let (st, metadata) = crate::weights::parse_safetensors(spec, bytes)?;
        if metadata.precision != Some(Precision::Int8) {
            return Err(ModelError::weights(
                "the file holds float weights, not a calibrated int8 network: quantize it with `convkit calibrate` \
                 (or ModelConfig::calibrate) first",
            ));
        }
        let net = spec.layers();
        let expected = int8_expected_keys(&net);
        let known: std::collections::HashSet<&str> = expected.iter().map(|(k, _, _)| k.as_str()).collect();
        if let Some(extra) = st.names().into_iter().find(|k| !known.contains(*k)) {
            return Err(ModelError::weights(format!(
                "unexpected key '{extra}' for the int8 {spec} ({} expected keys, the file has {}; \
                 quantized for another network?)",
                expected.len(),
                st.len()
            )));
        }
        for (key, shape, dtype) in expected {
            let view =
                st.tensor(&key).map_err(|_| ModelError::MissingKey { key: key.clone(), shape: shape.clone() })?;
            if view.shape() != shape {
                return Err(ModelError::KeyShape { key, expected: shape, got: view.shape().to_vec() });
            }
            if view.dtype() != dtype {
                return Err(ModelError::weights(format!(
                    "key '{key}' has dtype {:?}, expected {dtype:?}",
                    view.dtype()
                )));
            }
        }
        // Every key is there with its shape and dtype (checked above): read each in place.
        let take = |key: &str| st.tensor(key).expect("every expected key was checked").data();
        let f32s = |key: &str, bytes: &[u8]| -> Result<Vec<f32>, ModelError> {
            let v: Vec<f32> =
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(ModelError::weights(format!("key '{key}' holds {} at index {i}", v[i]))),
                None => Ok(v),
            }
        };
        let mut activations = BTreeMap::new();
        let mut convs = BTreeMap::new();
        let names = std::iter::once(INPUT_TENSOR.to_string()).chain(net.convs().map(|c| c.conv.clone()));
        for tensor in names {
            let (scale_key, zero_key) = activation_keys(&tensor);
            let scale = f32s(&scale_key, take(&scale_key))?[0];
            let zero = i32::from_le_bytes(take(&zero_key)[..4].try_into().expect("4 bytes"));
            let q =
                Quant::new(scale, zero).map_err(|e| ModelError::weights(format!("'{scale_key}'/'{zero_key}': {e}")))?;
            activations.insert(tensor, q);
        }
        for c in net.convs() {
            let key = format!("{}.weight", c.conv);
            let weights: Vec<i8> = take(&key).iter().map(|&b| b as i8).collect();
            if let Some(i) = weights.iter().position(|&w| i32::from(w) < -WEIGHT_MAX) {
                return Err(ModelError::weights(format!(
                    "key '{key}' holds {} at index {i}: int8 weights are in -{WEIGHT_MAX}..={WEIGHT_MAX}",
                    weights[i]
                )));
            }
            let scale_key = format!("{}.weight_scale", c.conv);
            let scales = f32s(&scale_key, take(&scale_key))?;
            if let Some(i) = scales.iter().position(|&s| s <= 0.0) {
                return Err(ModelError::weights(format!(
                    "key '{scale_key}' holds the scale {} at index {i}",
                    scales[i]
                )));
            }
            let bias_key = format!("{}.bias", c.conv);
            let bias = f32s(&bias_key, take(&bias_key))?;
            convs.insert(c.conv.clone(), QuantizedConv { weights, scales, bias });
        }
        let fc = |key: &str, shape: Vec<usize>, bytes: &[u8]| -> Result<WeightTensor, ModelError> {
            Ok(WeightTensor { shape, data: f32s(key, bytes)? })
        };
        let fc_weight = fc("fc.weight", vec![net.classes, net.features], take("fc.weight"))?;
        let fc_bias = fc("fc.bias", vec![net.classes], take("fc.bias"))?;
        Ok(Int8Weights { spec, convs, activations, fc_weight, fc_bias, metadata })
    }
}

/// `n` seeded images [n, 3, h, w] (NCHW) of values uniform in -1..1: the calibration set
/// of seeded weights, which have no real images to be calibrated on.
pub fn seeded_images(n: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * 3 * h * w).map(|_| rng.range(-1.0, 1.0)).collect()
}
