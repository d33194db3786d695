//! Named weights of a ResNet: the keys a spec expects, seeded initialisation, and
//! safetensors I/O with every key and shape checked.

use crate::spec::{NetSpec, ResNetSpec, Variant};
use crate::ModelError;
use convkit_tensor::Precision;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The safetensors metadata key convkit writes and checks: one key, whose value lists
/// `variant=d,depth=50,seed=0`, so that the file's bytes do not depend on the order a
/// map of several keys is written in.
const META_KEY: &str = "convkit";

/// BN statistics suffixes, in the order timm and torchvision store them.
const BN_KEYS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

/// One named tensor of f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    /// Dimensions, PyTorch order (OIHW for a conv weight).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// All tensors of one network, keyed by their PyTorch names.
#[derive(Debug, Clone)]
pub struct Weights {
    spec: ResNetSpec,
    tensors: BTreeMap<String, WeightTensor>,
    metadata: WeightsMetadata,
}

/// What a weights file says of itself, in the safetensors metadata convkit writes
/// (the key `convkit`: `variant=d,depth=50,seed=0`). Files from timm or torchvision
/// carry none of it: every field is then `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WeightsMetadata {
    /// The variant the weights are for.
    pub variant: Option<Variant>,
    /// The depth (50, 101 or 152).
    pub depth: Option<usize>,
    /// The seed, when the weights are convkit's seeded ones and not trained.
    pub seed: Option<u64>,
    /// `Some(Precision::Int8)` for a calibrated int8 network ([`crate::Int8Weights`]);
    /// `None` for float weights.
    pub precision: Option<Precision>,
    /// How an int8 network's activations were calibrated (method, images, their source).
    pub calibration: Option<String>,
}

impl WeightsMetadata {
    /// The metadata of a safetensors file's header; values convkit cannot read are errors
    /// naming the key.
    fn from_header(map: Option<&HashMap<String, String>>) -> Result<Self, ModelError> {
        let mut meta = Self::default();
        let Some(value) = map.and_then(|m| m.get(META_KEY)) else { return Ok(meta) };
        let bad = |field: &str, want: &str| {
            ModelError::weights(format!("metadata '{META_KEY}' is '{value}': its {field} is not {want}"))
        };
        for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (name, v) = field.split_once('=').ok_or_else(|| bad("field", "name=value"))?;
            match name {
                "variant" => meta.variant = Some(Variant::parse(v).map_err(|_| bad("variant", "a, b, c or d"))?),
                "depth" => match v.parse::<usize>() {
                    Ok(d) if d > 0 => meta.depth = Some(d),
                    _ => return Err(bad("depth", "a depth such as 50, 101 or 152")),
                },
                "seed" => meta.seed = Some(v.parse::<u64>().map_err(|_| bad("seed", "a whole number"))?),
                "precision" => {
                    meta.precision = Some(v.parse::<Precision>().map_err(|_| bad("precision", "f32, bf16 or int8"))?)
                }
                "calibration" => meta.calibration = Some(v.to_string()),
                _ => {} // written by a later convkit: not ours to judge
            }
        }
        Ok(meta)
    }

    /// The metadata convkit writes.
    pub(crate) fn to_header(&self) -> HashMap<String, String> {
        let mut fields = Vec::new();
        if let Some(v) = self.variant {
            fields.push(format!("variant={}", v.to_string().to_ascii_lowercase()));
        }
        if let Some(d) = self.depth {
            fields.push(format!("depth={d}"));
        }
        if let Some(s) = self.seed {
            fields.push(format!("seed={s}"));
        }
        if let Some(p) = self.precision {
            fields.push(format!("precision={p}"));
        }
        if let Some(c) = &self.calibration {
            // One field of a comma-separated list.
            fields.push(format!("calibration={}", c.replace(',', ";")));
        }
        HashMap::from([(META_KEY.to_string(), fields.join(","))])
    }

    /// Refuses metadata that names another network than `spec`.
    fn check(&self, spec: ResNetSpec) -> Result<(), ModelError> {
        let variant_differs = self.variant.is_some() && self.variant != spec.variant();
        let depth_differs = self.depth.is_some_and(|d| d != spec.depth());
        if variant_differs || depth_differs {
            let depth = self.depth.unwrap_or(spec.depth());
            let found = match self.variant {
                Some(v) => format!("ResNet-{depth}-{v}"),
                None => format!("ResNet-{depth}"),
            };
            return Err(ModelError::WrongNetwork {
                found: format!("{found} (its metadata says so)"),
                wanted: spec.to_string(),
                hint: String::new(),
            });
        }
        Ok(())
    }
}

/// The networks of the four variants at every depth whose keys and shapes are exactly
/// those of `tensors`, by name; A and B share every key and shape, so both are named.
fn networks_matching(tensors: &BTreeMap<String, WeightTensor>) -> Vec<ResNetSpec> {
    let mut found = Vec::new();
    for depth in ResNetSpec::DEPTHS {
        for v in Variant::ALL {
            let spec = ResNetSpec::with_depth(v, depth).expect("a known depth");
            let keys = expected_keys(&spec.layers());
            if keys.len() == tensors.len() && keys.iter().all(|(k, s)| tensors.get(k).is_some_and(|t| &t.shape == s)) {
                found.push(spec);
            }
        }
    }
    found
}

/// The error for weights of another network than `spec`, when their keys say which.
fn wrong_network(spec: ResNetSpec, tensors: &BTreeMap<String, WeightTensor>) -> Option<ModelError> {
    let found = networks_matching(tensors);
    let first = found.first()?;
    let variants: Vec<String> = found.iter().filter_map(|s| s.variant()).map(|v| v.to_string()).collect();
    let depth = first.depth();
    let hint = if depth != spec.depth() { format!(" (pass --depth {depth})") } else { String::new() };
    Some(ModelError::WrongNetwork {
        found: format!("ResNet-{depth}-{} weights (by their keys and shapes)", variants.join(" or ")),
        wanted: spec.to_string(),
        hint,
    })
}

/// Every key the spec's network has, with its shape.
pub fn expected_keys(net: &NetSpec) -> Vec<(String, Vec<usize>)> {
    let mut keys = Vec::new();
    for c in net.convs() {
        keys.push((format!("{}.weight", c.conv), vec![c.co, c.ci, c.kernel, c.kernel]));
        for s in BN_KEYS {
            keys.push((format!("{}.{s}", c.bn), vec![c.co]));
        }
    }
    keys.push(("fc.weight".into(), vec![net.classes, net.features]));
    keys.push(("fc.bias".into(), vec![net.classes]));
    keys
}

/// Deterministic normal samples (splitmix64 + Box-Muller).
pub(crate) struct Rng(u64);

impl Rng {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The stream of `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Rng::GOLDEN);
        Rng::mix(self.0)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// The `n` normal values (times `std`) that `n` draws of two uniforms each give, made
    /// in parallel: SplitMix64's draw `t` is a function of the state and `t` alone.
    fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        use rayon::prelude::*;
        let start = self.0;
        let draw = |t: u64| {
            ((Rng::mix(start.wrapping_add(t.wrapping_mul(Rng::GOLDEN))) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let out = (0..n as u64)
            .into_par_iter()
            .map(|j| {
                let (u1, u2) = (draw(2 * j + 1), draw(2 * j + 2));
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
            })
            .collect();
        self.0 = start.wrapping_add((2 * n as u64).wrapping_mul(Rng::GOLDEN));
        out
    }
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.uniform()) as f32
    }
}

/// One seeded tensor: `key` of the spec's network, from its own random stream (the seed
/// mixed with the key), so that any tensor can be made alone, in any order.
/// He-normal conv weights (fan in, so activations keep their scale through ReLU), BN
/// statistics near identity, the last BN of each residual branch scaled by 0.25 so the
/// residual sums stay finite over 16+ blocks.
fn seeded_tensor(net: &NetSpec, seed: u64, key: &str) -> Option<WeightTensor> {
    // FNV-1a of the key, mixed into the seed.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = Rng(seed ^ hash);
    let (name, suffix) = key.rsplit_once('.')?;
    if name == "fc" {
        return match suffix {
            "weight" => {
                let std = (1.0 / net.features as f64).sqrt();
                let data = rng.normals(net.classes * net.features, std);
                Some(WeightTensor { shape: vec![net.classes, net.features], data })
            }
            "bias" => {
                let data = (0..net.classes).map(|_| rng.range(-0.01, 0.01)).collect();
                Some(WeightTensor { shape: vec![net.classes], data })
            }
            _ => None,
        };
    }
    if suffix == "weight" {
        if let Some(c) = net.convs().find(|c| c.conv == name) {
            let std = (2.0 / (c.ci * c.kernel * c.kernel) as f64).sqrt();
            let data = rng.normals(c.weight_len(), std);
            return Some(WeightTensor { shape: vec![c.co, c.ci, c.kernel, c.kernel], data });
        }
    }
    let c = net.convs().find(|c| c.bn == name)?;
    let last_bn = net.blocks.iter().any(|b| b.conv3.bn == name);
    let data = match suffix {
        "weight" => (0..c.co).map(|_| rng.range(0.8, 1.2) * if last_bn { 0.25 } else { 1.0 }).collect(),
        "bias" | "running_mean" => (0..c.co).map(|_| rng.range(-0.1, 0.1)).collect(),
        "running_var" => (0..c.co).map(|_| rng.range(0.5, 1.5)).collect(),
        _ => return None,
    };
    Some(WeightTensor { shape: vec![c.co], data })
}

/// Where a network's build takes its tensors from, one at a time: each is freed once it
/// is packed, so the raw and the packed network are never held in full at once.
pub trait WeightSource {
    /// The network the tensors are for.
    fn spec(&self) -> ResNetSpec;
    /// Removes and returns the tensor named `key`.
    fn take(&mut self, key: &str) -> Result<WeightTensor, ModelError>;
}

impl WeightSource for Weights {
    fn spec(&self) -> ResNetSpec {
        self.spec
    }
    fn take(&mut self, key: &str) -> Result<WeightTensor, ModelError> {
        Weights::take(self, key)
    }
}

/// The seeded weights of [`Weights::seeded`], made one tensor at a time as a build takes
/// them: building from it never holds all the f32 weights (98 MiB for ResNet-50) at once.
#[derive(Debug, Clone)]
pub struct SeededWeights {
    spec: ResNetSpec,
    net: NetSpec,
    seed: u64,
}

impl SeededWeights {
    /// The seeded weights of `spec` for `seed`, none made yet.
    pub fn new(spec: ResNetSpec, seed: u64) -> Self {
        SeededWeights { spec, net: spec.layers(), seed }
    }
}

impl WeightSource for SeededWeights {
    fn spec(&self) -> ResNetSpec {
        self.spec
    }
    fn take(&mut self, key: &str) -> Result<WeightTensor, ModelError> {
        seeded_tensor(&self.net, self.seed, key).ok_or_else(|| missing(key))
    }
}

impl Weights {
    /// Seeded weights, every tensor from its own stream of `seed` (see [`SeededWeights`],
    /// which makes the same tensors one at a time). Same seed, same weights.
    pub fn seeded(spec: ResNetSpec, seed: u64) -> Self {
        let net = spec.layers();
        let tensors = expected_keys(&net)
            .into_iter()
            .map(|(key, _)| {
                let t = seeded_tensor(&net, seed, &key).expect("every expected key has a seeded tensor");
                (key, t)
            })
            .collect();
        let metadata = WeightsMetadata {
            variant: spec.variant(),
            depth: Some(spec.depth()),
            seed: Some(seed),
            ..WeightsMetadata::default()
        };
        Weights { spec, tensors, metadata }
    }

    /// Checks a map of named tensors against the spec: every expected key present with its
    /// shape, nothing unexpected (BN `num_batches_tracked` counters are ignored). Denormals
    /// are flushed to zero: they slow FMAs 20-50x and carry no information here.
    pub fn from_tensors(spec: ResNetSpec, mut tensors: BTreeMap<String, WeightTensor>) -> Result<Self, ModelError> {
        tensors.retain(|k, _| !k.ends_with(".num_batches_tracked"));
        let expected = expected_keys(&spec.layers());
        let fits = expected.len() == tensors.len()
            && expected.iter().all(|(k, s)| tensors.get(k).is_some_and(|t| &t.shape == s));
        if !fits {
            if let Some(e) = wrong_network(spec, &tensors) {
                return Err(e);
            }
        }
        for (key, shape) in &expected {
            match tensors.get(key) {
                None => return Err(ModelError::MissingKey { key: key.clone(), shape: shape.clone() }),
                Some(t) if &t.shape != shape => {
                    return Err(ModelError::KeyShape {
                        key: key.clone(),
                        expected: shape.clone(),
                        got: t.shape.clone(),
                    })
                }
                Some(t) if t.data.len() != shape.iter().product::<usize>() => {
                    return Err(ModelError::weights(format!(
                        "key '{key}' holds {} values for shape {shape:?}",
                        t.data.len()
                    )))
                }
                Some(_) => {}
            }
        }
        if tensors.len() > expected.len() {
            let known: std::collections::HashSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
            let extra: Vec<&String> = tensors.keys().filter(|k| !known.contains(k.as_str())).take(5).collect();
            return Err(ModelError::weights(format!(
                "unexpected key(s) {extra:?} for this variant ({} expected keys, file has {})",
                expected.len(),
                tensors.len()
            )));
        }
        for (key, t) in &tensors {
            if let Some((i, v)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ModelError::weights(format!("key '{key}' holds {v} at index {i}: weights must be finite")));
            }
            if key.ends_with(".running_var") {
                if let Some((i, v)) = t.data.iter().enumerate().find(|(_, &v)| v + crate::BN_EPS <= 0.0) {
                    return Err(ModelError::weights(format!(
                        "key '{key}' holds the variance {v} at index {i}: running_var + eps must be positive"
                    )));
                }
            }
        }
        for t in tensors.values_mut() {
            t.data.iter_mut().filter(|v| v.is_subnormal()).for_each(|v| *v = 0.0);
        }
        Ok(Weights { spec, tensors, metadata: WeightsMetadata::default() })
    }

    /// Parses safetensors bytes (f32, f16, bf16 or f64 tensors) for `spec`.
    pub fn from_safetensors_bytes(spec: ResNetSpec, bytes: &[u8]) -> Result<Self, ModelError> {
        let (st, metadata) = parse_safetensors(spec, bytes)?;
        if metadata.precision == Some(Precision::Int8) {
            return Err(ModelError::weights(
                "the file holds a calibrated int8 network (written by `convkit calibrate`): build it with precision int8",
            ));
        }
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            if name.ends_with(".num_batches_tracked") {
                continue;
            }
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::F64 => {
                    raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
                }
                other => {
                    return Err(ModelError::weights(format!("key '{name}' has dtype {other:?}; expected a float type")))
                }
            };
            tensors.insert(name.to_string(), WeightTensor { shape: view.shape().to_vec(), data });
        }
        let mut weights = Self::from_tensors(spec, tensors)?;
        weights.metadata = metadata;
        Ok(weights)
    }

    /// Reads a safetensors file; errors name the file. Duplicate keys, non-finite values and
    /// non-positive variances are refused.
    pub fn load(spec: ResNetSpec, path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_safetensors_bytes(spec, &bytes).map_err(|e| e.in_file(path))
    }

    /// f32 safetensors bytes under the spec's key names.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = bytes
            .iter()
            .map(|(k, s, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (k.as_str(), v))
                    .map_err(|e| ModelError::weights(format!("key '{k}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata =
            WeightsMetadata { variant: self.spec.variant(), depth: Some(self.spec.depth()), ..self.metadata.clone() };
        safetensors::serialize(views, Some(metadata.to_header()))
            .map_err(|e| ModelError::weights(format!("serialize: {e}")))
    }

    /// Writes the weights as a safetensors file (f32).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        std::fs::write(path, self.to_safetensors_bytes()?).map_err(|e| ModelError::io(path, e))
    }

    /// The spec the weights are for.
    pub fn spec(&self) -> ResNetSpec {
        self.spec
    }

    /// What the file said of itself (all `None` for weights not written by convkit);
    /// seeded weights carry their variant, depth and seed.
    pub fn metadata(&self) -> &WeightsMetadata {
        &self.metadata
    }

    /// The tensor under `key` (keys come from the spec, so a miss is a bug, reported as an error).
    pub fn get(&self, key: &str) -> Result<&WeightTensor, ModelError> {
        self.tensors.get(key).ok_or_else(|| missing(key))
    }

    /// Removes and returns the tensor under `key`, so a model built from owned weights
    /// frees each raw tensor as soon as it is packed.
    pub fn take(&mut self, key: &str) -> Result<WeightTensor, ModelError> {
        self.tensors.remove(key).ok_or_else(|| missing(key))
    }

    /// Every tensor, by key.
    pub fn tensors(&self) -> &BTreeMap<String, WeightTensor> {
        &self.tensors
    }
}

/// The tensors and metadata of safetensors `bytes`, the metadata checked against `spec`;
/// a header naming a tensor twice is refused.
pub(crate) fn parse_safetensors(
    spec: ResNetSpec,
    bytes: &[u8],
) -> Result<(SafeTensors<'_>, WeightsMetadata), ModelError> {
    refuse_duplicate_keys(bytes)?;
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| ModelError::weights(format!("not a safetensors file: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| ModelError::weights(format!("not a safetensors file: {e}")))?;
    let metadata = WeightsMetadata::from_header(header.metadata().as_ref())?;
    metadata.check(spec)?;
    Ok((st, metadata))
}

/// The error for a key a build asks for and the weights lack.
fn missing(key: &str) -> ModelError {
    ModelError::MissingKey { key: key.to_string(), shape: Vec::new() }
}

/// Refuses a safetensors header that names a tensor twice: the JSON parser behind the
/// safetensors crate keeps one of them silently. The header is the JSON object after the
/// 8-byte length; its top-level keys are the tensor names (and `__metadata__`).
fn refuse_duplicate_keys(bytes: &[u8]) -> Result<(), ModelError> {
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) else {
        return Ok(()); // too short: the parser's own error names it
    };
    let Some(header) = usize::try_from(len).ok().and_then(|len| bytes.get(8..8usize.checked_add(len)?)) else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for key in top_level_keys(header) {
        if !seen.insert(key) {
            let name = String::from_utf8_lossy(key);
            return Err(ModelError::weights(format!("the safetensors header names '{name}' twice")));
        }
    }
    Ok(())
}

/// The keys of a JSON object's top level, as raw bytes between their quotes: strings are
/// skipped with their escapes, and a key is a string at depth 1 followed by ':'.
fn top_level_keys(json: &[u8]) -> Vec<&[u8]> {
    let mut keys = Vec::new();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < json.len() {
        match json[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < json.len() && json[j] != b'"' {
                    j += if json[j] == b'\\' { 2 } else { 1 };
                }
                let end = j.min(json.len());
                let after = json[end.saturating_add(1).min(json.len())..].iter().find(|c| !c.is_ascii_whitespace());
                if depth == 1 && after == Some(&b':') {
                    keys.push(&json[start..end]);
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    keys
}
