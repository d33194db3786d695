"""Batch inference on Ray Data: :class:`Predictor`, a callable class for
``ray.data.Dataset.map_batches`` that builds one model per actor.

>>> import ray, convkit.ray                                           # doctest: +SKIP
>>> ds = ray.data.read_binary_files("images/", include_paths=True)  # doctest: +SKIP
>>> ds = ds.map_batches(
...     convkit.ray.Predictor,
...     fn_constructor_kwargs={"weights": "resnet50d.safetensors", "variant": "d"},
...     compute=ray.data.ActorPoolStrategy(size=2),
...     num_cpus=1,  # the model's threads: the CPUs Ray gives each actor
...     batch_size=16,
...     batch_format="numpy",
... )                                                                 # doctest: +SKIP

Ray is not a dependency of convkit: this module imports it only when it asks Ray for
the CPUs of the actor it runs in.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import CROP, PathLike, ResNet, _convkit, _preprocess_list, class_names

__all__ = ["Predictor", "assigned_cpus"]


def assigned_cpus() -> int:
    """The whole CPUs Ray assigned to the worker this runs in (``num_cpus`` of its actor
    or task); outside Ray, the CPUs this process may run on. Ray sets only
    ``OMP_NUM_THREADS`` in its workers, which convkit does not read, so a model under Ray
    takes its thread count from here."""
    try:
        import ray

        if ray.is_initialized():
            # A worker given no CPU (or a fraction of one) still runs: on one thread.
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
            return max(1, int(cpus))
    except ImportError:
        pass
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Predictor:
    """Classifies the images of a Ray Data batch with one convkit model per actor.

    Pass the class itself to ``map_batches`` with ``compute=ray.data.ActorPoolStrategy
    (size=actors)``, ``num_cpus=threads`` and ``batch_format="numpy"``, and these
    arguments through ``fn_constructor_kwargs``; the model is built once, in the actor's
    ``__init__``.

    Args:
        weights: a safetensors file every worker can read (``None``: seeded weights,
            with a warning: not trained).
        variant, depth, precision, kxk, seed: as :class:`convkit.ResNet`.
        threads: the model's threads; ``None``: the CPUs Ray assigned the actor
            (:func:`assigned_cpus`), so that actors x threads never exceeds the CPUs
            Ray schedules on.
        column: the batch column holding the images: encoded bytes (``"bytes"`` of
            ``read_binary_files``), uint8 ``[h, w, 3]`` RGB images (``"image"`` of
            ``read_images(..., mode="RGB")``: other modes give other shapes, refused),
            or preprocessed float32 ``[3, 224, 224]`` arrays. The images are decoded on
            the model's threads. An image that cannot be decoded fails the batch with a
            :class:`convkit.ImageError` naming it by its ``path`` column (where the
            batch has one).
        top: classes kept per image.
        preprocess: "torchvision" or "timm"; ``None``: that of the weights' source.
        logits: also return the logits (a float32 ``[n, classes]`` column).

    Each output batch holds the input batch's other columns (``path``, for one) and
    ``top_classes`` (int64 ``[n, top]``), ``top_names`` (str ``[n, top]``) and
    ``top_probabilities`` (float32 ``[n, top]``), best first.
    """

    def __init__(
        self,
        weights: PathLike | None = None,
        *,
        variant: str = "d",
        depth: int = 50,
        precision: str = "f32",
        threads: int | None = None,
        kxk: str = "auto",
        seed: int = 0,
        column: str = "bytes",
        top: int = 5,
        preprocess: str | None = None,
        logits: bool = False,
    ) -> None:
        self.model = ResNet(variant, depth, weights, precision, threads or assigned_cpus(), kxk, seed=seed)
        self.column = column
        self.top = top
        self.preprocess = preprocess or self.model.default_preprocess
        self.logits = logits
        self._names = np.array(class_names(), dtype=object)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise KeyError(f"convkit.ray.Predictor: the batch has no column {self.column!r} (it has {sorted(batch)})")
        images = batch[self.column]
        if isinstance(images, np.ndarray) and images.dtype == np.float32 and images.shape[1:] == (3, CROP, CROP):
            x = images
        else:
            paths = batch.get("path")
            names = [str(p) for p in paths] if paths is not None else None
            x = _preprocess_list(list(images), self.preprocess, names, self.model)
        logits = self.model.run(x)
        ranked = [_convkit.top_k(row.tolist(), self.top) for row in logits]
        out = {k: v for k, v in batch.items() if k != self.column}
        classes = np.array([[c for c, _ in r] for r in ranked], dtype=np.int64).reshape(len(x), self.top)
        out["top_classes"] = classes
        out["top_names"] = self._names[classes].astype(str)
        out["top_probabilities"] = np.array([[p for _, p in r] for r in ranked], dtype=np.float32).reshape(
            len(x), self.top
        )
        if self.logits:
            out["logits"] = logits
        return out
