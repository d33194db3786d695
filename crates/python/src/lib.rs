//! `convkit._convkit`: the native module of the `convkit` Python package. The Python
//! layer (`python/convkit/`) turns its arguments into the plain types this module takes
//! (C-contiguous float32 arrays, strings) and documents the API; this module builds
//! models, runs them with the GIL released, preprocesses images and maps every convkit
//! error to an exception of `convkit.errors`.

use convkit_microkernel::{CacheSizes, CpuFeatures, Family, Kernel};
use convkit_model::{
    KxkPath, ModelConfig, ModelError, ResNet, ResNetSpec, Variant, Weights, WeightsMetadata, Workspace,
};
use convkit_preprocess::{Preprocess, PreprocessError, CROP};
use convkit_tensor::{Layout, Precision, Shape, TensorView};
use numpy::ndarray::{Array2, Array3, Array4};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyArray4, PyReadonlyArray3, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The exception classes of `convkit.errors` this module raises.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A model option (variant, precision, kxk, isa, threads) is invalid.
    Config,
    /// An input array is unfit (dtype, rank, channels, size, NaN or infinity).
    Input,
    /// A weights file does not fit the network.
    Weights,
    /// An image cannot be decoded or preprocessed.
    Image,
    /// Anything else (a thread pool that cannot start).
    Other,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Config => "ConfigError",
            Kind::Input => "InputError",
            Kind::Weights => "WeightsError",
            Kind::Image => "ImageError",
            Kind::Other => "Error",
        }
    }
}

/// The exception class `name` of `convkit.errors`, instantiated lazily with `args`.
fn convkit_error(name: &str, args: impl pyo3::PyErrArguments + 'static) -> PyErr {
    Python::attach(|py| {
        let class =
            py.import("convkit.errors").and_then(|m| m.getattr(name)).and_then(|c| Ok(c.cast_into::<PyType>()?));
        match class {
            Ok(class) => PyErr::from_type(class, args),
            Err(e) => e,
        }
    })
}

fn error(kind: Kind, message: impl Into<String>) -> PyErr {
    convkit_error(kind.class_name(), (message.into(),))
}

/// `convkit.errors.FileError` (an `OSError`): errno, message and file name, as Python's
/// own file errors carry them.
fn file_error(path: &Path, source: &std::io::Error, message: String) -> PyErr {
    let errno = source.raw_os_error().unwrap_or(0);
    convkit_error("FileError", (errno, message, path.display().to_string()))
}

/// The kind of a model error: what its innermost cause is.
fn model_kind(e: &ModelError, shape_kind: Kind) -> Kind {
    match e {
        ModelError::Kernel(_) => shape_kind,
        ModelError::InFile { source, .. } => model_kind(source, shape_kind),
        ModelError::MissingKey { .. }
        | ModelError::KeyShape { .. }
        | ModelError::WrongNetwork { .. }
        | ModelError::Weights(_) => Kind::Weights,
        _ => Kind::Other,
    }
}

/// A model error as an exception; a tensor error is of `shape_kind` (a bad option when
/// building, a bad input when running). The message is convkit's, naming the file, key
/// or shape.
fn model_error(e: ModelError, shape_kind: Kind) -> PyErr {
    match &e {
        ModelError::Io { path, source } => file_error(path, source, e.to_string()),
        _ => error(model_kind(&e, shape_kind), e.to_string()),
    }
}

fn preprocess_error(e: PreprocessError) -> PyErr {
    match &e {
        PreprocessError::Read { path, source } => file_error(path, source, e.to_string()),
        PreprocessError::Directory { path } => {
            let source = std::io::Error::from_raw_os_error(21); // EISDIR
            file_error(path, &source, e.to_string())
        }
        _ => error(Kind::Image, e.to_string()),
    }
}

fn parse<T: std::str::FromStr>(what: &str, value: &str) -> PyResult<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| error(Kind::Config, format!("{what}: {e}")))
}

/// A ResNet built once, run from any thread: each call borrows a workspace of the pool
/// below (or makes one), so concurrent calls run side by side on the model's threads.
#[pyclass(frozen, module = "convkit._convkit", name = "Model")]
struct Model {
    net: ResNet,
    metadata: WeightsMetadata,
    weights: Option<PathBuf>,
    /// Workspaces of finished calls, reused by the next: one per call running at once.
    workspaces: Mutex<Vec<Workspace>>,
}

/// Most threads a model's pool may have (as the CLI's `--threads`).
const MAX_THREADS: usize = 1024;

impl Model {
    /// Runs `f` with a workspace of a finished call (or a new one), returned to the pool
    /// afterwards: one workspace per call running at once, none grown twice.
    fn with_workspace<R>(&self, f: impl FnOnce(&mut Workspace) -> R) -> R {
        let mut ws = self.workspaces.lock().map(|mut pool| pool.pop()).ok().flatten().unwrap_or_default();
        let out = f(&mut ws);
        if let Ok(mut pool) = self.workspaces.lock() {
            pool.push(ws);
        }
        out
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (variant, depth, weights, precision, threads, kxk, isa, seed, sub_batch))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, passed on by convkit.ResNet
    fn new(
        py: Python<'_>,
        variant: &str,
        depth: usize,
        weights: Option<PathBuf>,
        precision: &str,
        threads: Option<usize>,
        kxk: &str,
        isa: Option<&str>,
        seed: u64,
        sub_batch: usize,
    ) -> PyResult<Self> {
        let variant: Variant = parse("variant", variant)?;
        let spec = ResNetSpec::with_depth(variant, depth).map_err(|e| error(Kind::Config, format!("depth: {e}")))?;
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS));
        if threads == 0 || threads > MAX_THREADS {
            return Err(error(Kind::Config, format!("threads must be between 1 and {MAX_THREADS}, got {threads}")));
        }
        if sub_batch == 0 {
            return Err(error(Kind::Config, "sub_batch must be at least 1, got 0"));
        }
        let features = isa.map(|mask| parse::<CpuFeatures>("isa", mask)).transpose()?;
        let config = ModelConfig::new(spec)
            .with_precision(parse("precision", precision)?)
            .with_kxk(parse::<KxkPath>("kxk", kxk)?)
            .with_features_opt(features)
            .with_threads(threads)
            .with_sub_batch(sub_batch);
        let built = py.detach(|| match &weights {
            Some(path) => config.load(path),
            None => {
                let mut metadata = WeightsMetadata::default();
                metadata.seed = Some(seed);
                config.build_seeded(seed).map(|net| (net, metadata))
            }
        });
        let (net, metadata) = built.map_err(|e| model_error(e, Kind::Config))?;
        Ok(Model { net, metadata, weights, workspaces: Mutex::new(Vec::new()) })
    }

    /// Logits [n, classes] of `x`, a C-contiguous float32 array [n, 3, h, w] (`layout`
    /// "nchw") or [n, h, w, 3] ("nhwc"), with the GIL released.
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray4<'py, f32>,
        layout: &str,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let layout = match layout {
            "nchw" => Layout::Nchw,
            "nhwc" => Layout::Nhwc,
            other => return Err(error(Kind::Config, format!("layout {other:?}: expected \"nchw\" or \"nhwc\""))),
        };
        let dims = x.shape();
        let shape = match layout {
            Layout::Nchw => Shape::new(dims[0], dims[1], dims[2], dims[3]),
            Layout::Nhwc => Shape::new(dims[0], dims[3], dims[1], dims[2]),
        };
        if shape.c != 3 {
            return Err(error(
                Kind::Input,
                format!("x has shape {dims:?}: {} channels, expected 3 (RGB, {layout:?})", shape.c),
            ));
        }
        let data = x.as_slice().map_err(|_| error(Kind::Input, "x is not C-contiguous"))?;
        let classes = self.net.classes();
        if shape.n == 0 {
            return Ok(Array2::zeros((0, classes)).into_pyarray(py));
        }
        let logits = py.detach(|| -> Result<Vec<f32>, PyErrLater> {
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(PyErrLater(Kind::Input, non_finite_message(data[i], i, dims, layout)));
            }
            let view = TensorView::new(shape, layout, data).map_err(|e| PyErrLater(Kind::Input, e.to_string()))?;
            let logits = self.with_workspace(|ws| self.net.forward(view, ws).map(<[f32]>::to_vec));
            logits.map_err(|e| PyErrLater(model_kind(&e, Kind::Input), format!("x of shape {dims:?}: {e}")))
        });
        let logits = logits.map_err(|PyErrLater(kind, message)| error(kind, message))?;
        let logits = Array2::from_shape_vec((shape.n, classes), logits).expect("the model returns n x classes logits");
        Ok(logits.into_pyarray(py))
    }

    /// Seconds of each of `passes` forward passes of `x` timed in Rust, with no Python
    /// between them: what `run` costs beyond the forward pass is its time less these
    /// (crates/python/benches/throughput.py).
    fn time_forward(&self, py: Python<'_>, x: PyReadonlyArray4<'_, f32>, passes: usize) -> PyResult<Vec<f64>> {
        let dims = x.shape();
        let shape = Shape::new(dims[0], dims[1], dims[2], dims[3]);
        let data = x.as_slice().map_err(|_| error(Kind::Input, "x is not C-contiguous"))?;
        let view = TensorView::new(shape, Layout::Nchw, data).map_err(|e| error(Kind::Input, e.to_string()))?;
        let times = py.detach(|| {
            self.with_workspace(|ws| {
                // An untimed pass first, so that no timed one grows the workspace.
                self.net.forward(view, ws)?;
                (0..passes)
                    .map(|_| {
                        let start = std::time::Instant::now();
                        self.net.forward(view, ws).map(|_| start.elapsed().as_secs_f64())
                    })
                    .collect::<Result<Vec<f64>, ModelError>>()
            })
        });
        times.map_err(|e| model_error(e, Kind::Input))
    }

    /// Multiply-adds of one image of h x w.
    fn macs_at(&self, h: usize, w: usize) -> PyResult<u64> {
        let too_large = || error(Kind::Input, format!("{h}x{w}: the multiply-adds overflow 64 bits"));
        let c = self.net.spec().layers().counts(h, w).map_err(|_| too_large())?;
        [c.macs_3x3, c.macs_stem, c.macs_fc].into_iter().try_fold(c.macs_1x1, u64::checked_add).ok_or_else(too_large)
    }

    /// Parameters (conv weights, BN scale and shift, FC weight and bias).
    #[getter]
    fn params(&self) -> PyResult<u64> {
        let counts = self.net.spec().layers().counts(CROP, CROP).map_err(|e| error(Kind::Other, e.to_string()))?;
        Ok(counts.params)
    }

    #[getter]
    fn variant(&self) -> String {
        self.net.spec().variant().map_or_else(|| "custom".into(), |v| v.to_string().to_ascii_lowercase())
    }

    #[getter]
    fn depth(&self) -> usize {
        self.net.spec().depth()
    }

    #[getter]
    fn network(&self) -> String {
        self.net.spec().to_string()
    }

    #[getter]
    fn precision(&self) -> &'static str {
        self.net.precision().name()
    }

    #[getter]
    fn kernel(&self) -> String {
        self.net.kernel().to_string()
    }

    #[getter]
    fn isa(&self) -> &'static str {
        self.net.kernel().family().name()
    }

    #[getter]
    fn kxk(&self) -> String {
        self.net.config().kxk.to_string()
    }

    #[getter]
    fn classes(&self) -> usize {
        self.net.classes()
    }

    #[getter]
    fn threads(&self) -> Option<usize> {
        self.net.threads()
    }

    #[getter]
    fn sub_batch(&self) -> usize {
        self.net.sub_batch()
    }

    #[getter]
    fn weights(&self) -> Option<PathBuf> {
        self.weights.clone()
    }

    /// The seed of convkit's seeded weights, when the model has them (not trained).
    #[getter]
    fn seed(&self) -> Option<u64> {
        self.metadata.seed
    }

    /// Whether the weights file named its variant (A and B files without it cannot be
    /// told apart).
    #[getter]
    fn file_names_variant(&self) -> bool {
        self.metadata.variant.is_some()
    }
}

/// An error made where the GIL is released, raised once it is held again.
struct PyErrLater(Kind, String);

/// Where the first non-finite value of an input is, by its index in each dimension.
fn non_finite_message(value: f32, flat: usize, dims: &[usize], layout: Layout) -> String {
    let mut index = [0; 4];
    let mut rest = flat;
    for d in (0..4).rev() {
        index[d] = rest % dims[d];
        rest /= dims[d];
    }
    let names = match layout {
        Layout::Nchw => "[n, c, y, x]",
        Layout::Nhwc => "[n, y, x, c]",
    };
    format!("x holds {value} at {names} = {index:?}: inputs must be finite")
}

/// What `preprocess_many` reads an image from.
#[derive(Debug, FromPyObject)]
enum ImageSource {
    #[pyo3(transparent, annotation = "bytes")]
    Bytes(Vec<u8>),
    #[pyo3(transparent, annotation = "str | os.PathLike")]
    Path(PathBuf),
}

fn preprocess_one(source: &ImageSource, mode: Preprocess) -> Result<Vec<f32>, PreprocessError> {
    match source {
        ImageSource::Path(path) => convkit_preprocess::preprocess(path, mode),
        ImageSource::Bytes(bytes) => convkit_preprocess::preprocess_bytes(bytes, mode),
    }
}

/// Preprocesses encoded images (files or bytes) into [n, 3, 224, 224], decoding them in
/// parallel with the GIL released: on `model`'s threads when given (so that a model's
/// caller never runs more threads than the model has), else on the process's pool. An
/// error names the image: its file, or `names[i]` for bytes.
#[pyfunction]
#[pyo3(signature = (sources, names, mode, model=None))]
fn preprocess_many<'py>(
    py: Python<'py>,
    sources: Vec<ImageSource>,
    names: Vec<String>,
    mode: &str,
    model: Option<&Model>,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    use rayon::prelude::*;
    let mode: Preprocess = parse("preprocess", mode)?;
    if names.len() != sources.len() {
        return Err(error(Kind::Input, format!("{} names for {} images", names.len(), sources.len())));
    }
    let decode = || sources.par_iter().map(|s| preprocess_one(s, mode)).collect::<Vec<_>>();
    let images = py.detach(|| match model {
        Some(m) => m.net.on_pool(decode),
        None => decode(),
    });
    let mut out = Vec::with_capacity(images.len() * 3 * CROP * CROP);
    for ((image, source), name) in images.into_iter().zip(&sources).zip(&names) {
        match (image, source) {
            (Ok(x), _) => out.extend(x),
            (Err(e), ImageSource::Path(_)) => return Err(preprocess_error(e)),
            (Err(e), ImageSource::Bytes(_)) => return Err(error(Kind::Image, format!("{name}: {e}"))),
        }
    }
    let n = sources.len();
    let out = Array4::from_shape_vec((n, 3, CROP, CROP), out).expect("3 x 224 x 224 values per image");
    Ok(out.into_pyarray(py))
}

/// Preprocesses a decoded RGB image, a C-contiguous uint8 array [h, w, 3], into [3, 224, 224].
#[pyfunction]
fn preprocess_rgb<'py>(
    py: Python<'py>,
    pixels: PyReadonlyArray3<'py, u8>,
    mode: &str,
) -> PyResult<Bound<'py, PyArray3<f32>>> {
    let mode: Preprocess = parse("preprocess", mode)?;
    let dims = pixels.shape();
    let [h, w, c] = [dims[0], dims[1], dims[2]];
    if c != 3 {
        return Err(error(Kind::Input, format!("image has shape {dims:?}: expected [h, w, 3] RGB")));
    }
    let (Ok(h32), Ok(w32)) = (u32::try_from(h), u32::try_from(w)) else {
        return Err(error(Kind::Input, format!("image has shape {dims:?}: too large")));
    };
    let data = pixels.as_slice().map_err(|_| error(Kind::Input, "image is not C-contiguous"))?;
    let x = py.detach(|| convkit_preprocess::preprocess_rgb(data, w32, h32, mode)).map_err(preprocess_error)?;
    Ok(Array3::from_shape_vec((3, CROP, CROP), x).expect("3 x 224 x 224 values").into_pyarray(py))
}

/// The k largest logits of a row with their softmax probabilities: [(class, probability)],
/// the same as the CLI's `classify`.
#[pyfunction]
fn top_k(logits: Vec<f32>, k: usize) -> Vec<(usize, f32)> {
    convkit_preprocess::top_k(&logits, k)
}

/// The 1000 ImageNet class names, in class-index order.
#[pyfunction]
fn class_names() -> Vec<&'static str> {
    convkit_preprocess::class_names()
}

/// Writes convkit's seeded weights (not trained) of a network to a safetensors file, with
/// the variant, depth and seed in its metadata, as `convkit export` does.
#[pyfunction]
fn save_seeded_weights(py: Python<'_>, path: PathBuf, variant: &str, depth: usize, seed: u64) -> PyResult<()> {
    let spec = ResNetSpec::with_depth(parse("variant", variant)?, depth)
        .map_err(|e| error(Kind::Config, format!("depth: {e}")))?;
    py.detach(|| Weights::seeded(spec, seed).save(&path)).map_err(|e| model_error(e, Kind::Config))
}

/// The machine as convkit sees it: CPU, capabilities, kernels, caches and (with
/// `peak_seconds` > 0) the f32 FMA and bf16 dot-product peaks of one core, measured.
#[pyfunction]
fn info<'py>(py: Python<'py>, isa: Option<&str>, peak_seconds: f64) -> PyResult<Bound<'py, PyDict>> {
    let mask = isa.map(|m| parse::<CpuFeatures>("isa", m)).transpose()?;
    let mask = CpuFeatures::resolve(mask).map_err(|e| error(Kind::Config, e.to_string()))?;
    let d = PyDict::new(py);
    d.set_item("convkit", env!("CARGO_PKG_VERSION"))?;
    d.set_item("cpu", convkit_microkernel::cpu_name())?;
    d.set_item("cores", std::thread::available_parallelism().map_or(1, |n| n.get()))?;
    d.set_item("detected", CpuFeatures::detected().to_string())?;
    d.set_item("isa", mask.to_string())?;
    let families: Vec<&str> = Family::available_in(mask).map(Family::name).collect();
    d.set_item("families", families)?;
    let kernels = PyDict::new(py);
    let mut picked = Vec::new();
    for precision in Precision::ALL {
        let kernel = Kernel::pick(precision, mask).map_err(|e| error(Kind::Config, e.to_string()))?;
        kernels.set_item(precision.name(), kernel.to_string())?;
        picked.push(kernel);
    }
    d.set_item("kernels", kernels)?;
    d.set_item("family", Family::pick(mask).name())?;
    let cache = CacheSizes::get();
    let caches = PyDict::new(py);
    caches.set_item("l1d", cache.l1d)?;
    caches.set_item("l2", cache.l2)?;
    caches.set_item("l3", cache.l3)?;
    caches.set_item("detected", cache.detected)?;
    d.set_item("caches", caches)?;
    if peak_seconds > 0.0 {
        let (f32_family, bf16_family) = (picked[0].family(), picked[1].family());
        let (fma, dot) = py.detach(|| {
            (
                convkit_microkernel::measure_fma_gflops(f32_family, peak_seconds),
                convkit_microkernel::measure_bf16_gflops(bf16_family, peak_seconds),
            )
        });
        let peaks = PyDict::new(py);
        peaks.set_item("f32_gflops_per_core", fma)?;
        peaks.set_item("bf16_gflops_per_core", dot)?;
        peaks.set_item("bf16_native", picked[1].native_bf16())?;
        d.set_item("peaks", peaks)?;
    }
    Ok(d)
}

#[pymodule]
fn _convkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(preprocess_many, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess_rgb, m)?)?;
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    m.add_function(wrap_pyfunction!(class_names, m)?)?;
    m.add_function(wrap_pyfunction!(save_seeded_weights, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CROP", CROP)?;
    Ok(())
}
