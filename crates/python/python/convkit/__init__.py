"""convkit: ResNet-50 A/B/C/D on SIMD convolution kernels written in Rust.

>>> import numpy as np, convkit
>>> model = convkit.ResNet("d", weights="resnet50d.safetensors", precision="bf16")  # doctest: +SKIP
>>> logits = model(np.zeros((1, 3, 224, 224), np.float32))                         # doctest: +SKIP
>>> model.classify(["cat.jpg"], top=5)                                              # doctest: +SKIP

The kernels are chosen when the module is imported, from what the CPU has (AVX-512
with or without AVX512-BF16, AVX2+FMA, or portable code): :func:`info` says which.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterable, Sequence, Union

import numpy as np

from . import _convkit
from .errors import ConfigError, Error, FileError, ImageError, InputError, WeightsError

__version__: str = _convkit.__version__

__all__ = [
    "ResNet",
    "preprocess",
    "info",
    "class_names",
    "save_seeded_weights",
    "Error",
    "ConfigError",
    "InputError",
    "WeightsError",
    "ImageError",
    "FileError",
    "__version__",
]

#: Side of the network input after preprocessing (the center crop).
CROP: int = _convkit.CROP

PathLike = Union[str, "os.PathLike[str]"]
#: What :meth:`ResNet.classify` and :func:`preprocess` take as one image: a file path, the
#: bytes of an encoded image (JPEG, PNG), a decoded RGB image as a uint8 array
#: ``[h, w, 3]``, or an already preprocessed float32 array ``[3, 224, 224]``.
Image = Union[PathLike, bytes, np.ndarray]

_PREPROCESS = ("torchvision", "timm")


def _as_input(x: Any) -> np.ndarray:
    """x as a C-contiguous float32 array without copying where it already is one."""
    if isinstance(x, np.ndarray):
        array = x
    elif hasattr(x, "__dlpack__"):
        # A torch tensor (or any DLPack producer) on the CPU: a read-only view, no copy.
        try:
            array = np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError) as e:
            raise InputError(f"x ({type(x).__name__}) cannot be read through DLPack: {e}") from None
    elif hasattr(x, "__array__"):
        array = np.asarray(x)
    else:
        raise InputError(
            f"x is a {type(x).__name__}: expected a float32 array [n, 3, h, w] "
            "(a numpy array, a torch tensor, or anything with __array__ or __dlpack__)"
        )
    if array.dtype != np.float32:
        raise InputError(f"x has dtype {array.dtype}: expected float32 (convert with x.astype(np.float32))")
    if array.ndim != 4:
        hint = "; for one image pass x[None]" if array.ndim == 3 else ""
        raise InputError(f"x has shape {tuple(array.shape)}: expected 4 dimensions [n, 3, h, w]{hint}")
    # A strided view (a slice, a transpose) or a misaligned buffer is copied once into
    # aligned C order; anything else is read in place.
    return np.require(array, np.float32, ["C_CONTIGUOUS", "ALIGNED"])


#: Largest value an integer option may take (the native module's u64).
_MAX_INT = 2**63 - 1


def _check_int(name: str, value: Any, low: int, high: int = _MAX_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int from {low} to {high}, got {value!r}")
    return value


def _check_preprocess(preprocess: str) -> str:
    if preprocess not in _PREPROCESS:
        raise ConfigError(f"preprocess {preprocess!r}: expected one of {', '.join(_PREPROCESS)}")
    return preprocess


class ResNet:
    """A ResNet (the "Bag of Tricks" variants A, B, C or D; depth 50, 101 or 152) built
    once for this CPU, then called on batches of images.

    Args:
        variant: "a", "b", "c" or "d".
        depth: 50, 101 or 152.
        weights: a safetensors file under timm's key names (C, D) or torchvision's (A,
            B), checked key by key against the network and against the variant and
            depth in its metadata. ``None`` builds convkit's seeded random weights
            (``seed``), with a warning: they are not trained.
        precision: "f32" (within 2e-6 of float64), "bf16" (bf16 weights and
            activations, f32 accumulation; ``vdpbf16ps`` where the CPU has it) or
            "int8" (u8 activations, s8 weights, exact s32 sums; ``weights`` must then be
            a file written by ``convkit calibrate``, and seeded weights are calibrated
            on seeded images when the model is built).
        threads: worker threads of the model's own pool; ``None`` uses every CPU this
            process may run on. Under Ray pass the CPUs the actor was given
            (:class:`convkit.ray.Predictor` does).
        kxk: how the 3x3 convs run: "auto", "winograd", "direct" or "im2col".
        isa: CPU capabilities the kernels may use: a family ("avx512bf16", "avx512",
            "avx2", "portable") or capabilities joined by "+"; ``None``: the
            ``CONVKIT_ISA`` environment variable, else everything the CPU has.
        seed: the seed of the weights when ``weights`` is ``None``.
        sub_batch: images run through the network at a time.

    Raises:
        ConfigError: an option is invalid or asks for a capability the CPU lacks.
        WeightsError: the file is not the requested network's (the message names the
            key, the shape or the variant it holds).
        FileError: the file cannot be read (an ``OSError``: ``FileNotFoundError``'s
            errno for a missing file).

    Calls: ``model(x)`` and ``model.run(x)`` release the GIL for the whole forward pass.
    Several Python threads may call one model at once: the calls run in parallel, each
    on a workspace of its own, sharing the model's thread pool (so together they take
    about as long as one after the other), and every call returns exactly what it would
    alone. Do not write to an input array while a call reads it.
    """

    def __init__(
        self,
        variant: str = "d",
        depth: int = 50,
        weights: PathLike | None = None,
        precision: str = "f32",
        threads: int | None = None,
        kxk: str = "auto",
        *,
        isa: str | None = None,
        seed: int = 0,
        sub_batch: int = 1,
    ) -> None:
        if weights is not None:
            weights = os.fspath(weights)
        _check_int("depth", depth, 0)
        _check_int("seed", seed, 0, 2**64 - 1)
        _check_int("sub_batch", sub_batch, 0)
        if threads is not None:
            _check_int("threads", threads, 0)
        self._model = _convkit.Model(str(variant), depth, weights, str(precision), threads, str(kxk), isa, seed, sub_batch)
        if weights is None:
            warnings.warn(
                f"convkit.ResNet: weights=None builds seeded random weights (seed {seed}), "
                "not trained ones: its classes mean nothing",
                UserWarning,
                stacklevel=2,
            )
        elif self._model.seed is not None:
            warnings.warn(
                f"{weights} holds convkit's seeded random weights (seed {self._model.seed}), "
                "not trained ones: its classes mean nothing",
                UserWarning,
                stacklevel=2,
            )
        elif not self._model.file_names_variant and self.variant in ("a", "b"):
            warnings.warn(
                f"A and B have the same keys and shapes, so nothing in {weights} says which it is; "
                "torchvision's resnet50 is B (variant='b')",
                UserWarning,
                stacklevel=2,
            )

    def __call__(self, x: Any, *, layout: str = "nchw") -> np.ndarray:
        """The same as :meth:`run`."""
        return self.run(x, layout=layout)

    def run(self, x: Any, *, layout: str = "nchw") -> np.ndarray:
        """Logits of a batch: a float32 array ``[n, classes]``.

        Args:
            x: float32 images ``[n, 3, h, w]`` (``layout="nchw"``, as torch has them) or
                ``[n, h, w, 3]`` (``"nhwc"``), normalised as the weights expect (see
                :func:`preprocess`): a numpy array, a CPU torch tensor (read through
                DLPack, torch is not needed), or anything with ``__array__``. A
                C-contiguous float32 array is read in place; any other layout in memory
                (a slice, a transpose) is copied once. Any batch size (0 gives an empty
                ``[0, classes]``) and any image size (224 x 224 is what the weights
                were trained at).

        Raises:
            InputError: x is not an array, not float32, not 4-dimensional, does not
                have 3 channels, has an empty side, or holds a NaN or an infinity (the
                message gives its index).
        """
        return self._model.run(_as_input(x), layout)

    def classify(
        self,
        images: Image | Iterable[Image],
        top: int = 5,
        preprocess: str | None = None,
        batch_size: int = 16,
    ) -> list[dict[str, Any]]:
        """The ``top`` ImageNet classes of each image, as ``convkit classify --json``
        gives them: one dict per image, in order, ``{"file": path or None, "top":
        [{"class": int, "name": str, "probability": float}, ...]}`` (best first).

        Args:
            images: one image or a list of them: file paths, encoded bytes, uint8 RGB
                arrays ``[h, w, 3]``, or preprocessed float32 arrays ``[3, 224, 224]``.
            top: classes per image (1 to the number of classes).
            preprocess: "torchvision" or "timm"; ``None``: that of the weights' source
                (torchvision for A and B, timm for C and D).
            batch_size: images run through the network at once.

        Raises:
            ImageError: an image cannot be decoded (the message names its file).
            FileError: a file cannot be read.
        """
        items = _as_list(images)
        if not isinstance(top, int) or not 1 <= top <= self.classes:
            raise ConfigError(f"top must be between 1 and {self.classes}, got {top!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        mode = _check_preprocess(preprocess or self.default_preprocess)
        names = class_names()
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            labels = [f"image {start + i}" for i in range(len(chunk))]
            logits = self.run(_preprocess_list(chunk, mode, labels, self))
            for item, row in zip(chunk, logits):
                classes = [
                    {"class": c, "name": names[c], "probability": p} for c, p in _convkit.top_k(row.tolist(), top)
                ]
                file = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
                results.append({"file": file, "top": classes})
        return results

    def macs_at(self, height: int, width: int) -> int:
        """Multiply-adds of one image of ``height`` x ``width``."""
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_INT:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        return self._model.macs_at(height, width)

    @property
    def variant(self) -> str:
        """"a", "b", "c" or "d"."""
        return self._model.variant

    @property
    def depth(self) -> int:
        """50, 101 or 152."""
        return self._model.depth

    @property
    def precision(self) -> str:
        """"f32" or "bf16"."""
        return self._model.precision

    @property
    def isa(self) -> str:
        """The kernel family the convs run on: "avx512bf16", "avx512", "avx2" or
        "portable"."""
        return self._model.isa

    @property
    def kernel(self) -> str:
        """The kernel the convs run on, "family.precision" ("avx512bf16.bf16")."""
        return self._model.kernel

    @property
    def kxk(self) -> str:
        """How the 3x3 convs run."""
        return self._model.kxk

    @property
    def params(self) -> int:
        """Parameters: conv weights, BN scale and shift, FC weight and bias."""
        return self._model.params

    @property
    def macs(self) -> int:
        """Multiply-adds of one 224 x 224 image."""
        return self._model.macs_at(CROP, CROP)

    @property
    def classes(self) -> int:
        """Logits per image."""
        return self._model.classes

    @property
    def threads(self) -> int:
        """Threads of the model's pool (it always has one of its own)."""
        threads = self._model.threads
        assert threads is not None, "convkit.ResNet builds every model with a pool of its own"
        return threads

    @property
    def sub_batch(self) -> int:
        """Images run through the network at a time."""
        return self._model.sub_batch

    @property
    def weights(self) -> str | None:
        """The weights file, or ``None`` for seeded weights."""
        w = self._model.weights
        return None if w is None else os.fspath(w)

    @property
    def seed(self) -> int | None:
        """The seed when the weights are convkit's seeded (untrained) ones."""
        return self._model.seed

    @property
    def default_preprocess(self) -> str:
        """The preprocessing of the weights' source: "torchvision" (A, B) or "timm" (C, D)."""
        return "torchvision" if self.variant in ("a", "b") else "timm"

    def __repr__(self) -> str:
        return (
            f"convkit.ResNet({self._model.network} {self.precision} on {self.kernel}, "
            f"threads={self.threads}, weights={self.weights!r})"
        )


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (str, bytes, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        # A batch of preprocessed images, or one image.
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def _preprocess_list(
    items: Sequence[Any], mode: str, names: Sequence[str] | None = None, model: ResNet | None = None
) -> np.ndarray:
    """[n, 3, 224, 224] float32 of images of every kind :data:`Image` names, encoded ones
    decoded in parallel (on ``model``'s threads when given). An error names the image by
    its file, else by ``names[i]`` (default ``"image i"``)."""
    names = list(names) if names is not None else [f"image {i}" for i in range(len(items))]
    out = np.empty((len(items), 3, CROP, CROP), np.float32)
    encoded: list[tuple[int, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, bytes, os.PathLike)):
            encoded.append((i, os.fspath(item) if not isinstance(item, bytes) else item))
        elif isinstance(item, np.ndarray) and item.dtype == np.uint8:
            if item.ndim != 3 or item.shape[2] != 3:
                raise InputError(f"{names[i]} has shape {item.shape}: a uint8 image must be [h, w, 3] RGB")
            out[i] = _convkit.preprocess_rgb(np.require(item, np.uint8, ["C_CONTIGUOUS", "ALIGNED"]), mode)
        elif isinstance(item, np.ndarray) and item.dtype == np.float32:
            if item.shape != (3, CROP, CROP):
                raise InputError(f"{names[i]} has shape {item.shape}: a float32 image must be preprocessed, [3, 224, 224]")
            out[i] = item
        else:
            kind = f"array of {item.dtype}" if isinstance(item, np.ndarray) else type(item).__name__
            raise InputError(
                f"{names[i]} is a {kind}: expected a path, encoded bytes, a uint8 [h, w, 3] or a float32 [3, 224, 224] array"
            )
    if encoded:
        at = [i for i, _ in encoded]
        native = model._model if model is not None else None
        out[at] = _convkit.preprocess_many([s for _, s in encoded], [names[i] for i in at], mode, native)
    return out


def preprocess(images: Image | Sequence[Image], preprocess: str = "timm") -> np.ndarray:
    """ImageNet evaluation preprocessing, as the CLI's ``classify`` and ``preprocess``
    do it: resize the shorter side to 256 (torchvision: bilinear; timm: bicubic,
    crop_pct 0.875), center-crop 224, normalise with the ImageNet mean and std.

    Args:
        images: one image (a path, encoded bytes, or a uint8 RGB array ``[h, w, 3]``)
            or a list of them.
        preprocess: "torchvision" or "timm".

    Returns:
        float32 ``[3, 224, 224]`` for one image, ``[n, 3, 224, 224]`` for a list.

    Raises:
        ImageError: an image cannot be decoded (the message names its file).
        FileError: a file cannot be read.
    """
    mode = _check_preprocess(preprocess)
    if isinstance(images, (str, bytes, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
        return _preprocess_list([images], mode)[0]
    return _preprocess_list(list(images), mode)


def info(peaks: bool = True, isa: str | None = None) -> dict[str, Any]:
    """This machine as convkit sees it: ``cpu``, ``cores``, the capabilities it
    ``detected`` and the mask in effect (``isa``), the kernel ``families`` it runs, the
    ``kernels`` each precision runs on and the ``family`` of the f32 one, the ``caches``
    (bytes), and with ``peaks`` the f32 FMA and bf16 dot-product GFLOP/s of one core,
    measured (about 0.2 s)."""
    return _convkit.info(isa, 0.1 if peaks else 0.0)


def class_names() -> list[str]:
    """The 1000 ImageNet class names, in class-index order."""
    return _convkit.class_names()


def save_seeded_weights(path: PathLike, variant: str = "d", depth: int = 50, seed: int = 0) -> None:
    """Writes convkit's seeded (untrained) weights of a network to a safetensors file,
    with the variant, depth and seed in its metadata, as ``convkit export`` does."""
    _convkit.save_seeded_weights(os.fspath(path), variant, depth, seed)
