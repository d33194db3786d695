"""Throughput of the Python package, measured in alternating rounds (the figures of
docs/results.md; not a test: nothing here asserts a time).

  python crates/python/benches/throughput.py binding [--batch 1,16] [--rounds 10] [--iters 10]
      images/s of ResNet-50-D through `model(x)` against the same model's forward pass
      timed in Rust with no Python between passes (one process, the same input),
      alternating in each round: what the binding costs.
  python crates/python/benches/throughput.py pipeline [--images 256] [--batch 16] [--rounds 3]
      images/s of classifying the same JPEG files (decode and preprocess included):
      in process (convkit.preprocess + model.run, batch by batch), on a local Ray with
      one actor of 2 threads and with two actors of 1 thread (the repository's
      example), and onnxruntime's Python API on the same graph, weights and tensors.

  python crates/python/benches/throughput.py preprocess [--rounds 5]
      images/s of decoding and preprocessing on one core (timm's recipe): convkit against
      Pillow (open, convert, resize, crop) plus torchvision's ToTensor and Normalize
      written in numpy (float32, its order), on scikit-image's photographs as JPEG
      (quality 90, 4:2:0) and PNG.

All need a venv with the package and `-r crates/python/requirements-test.txt`;
`pipeline` also needs onnxruntime, onnx and safetensors (tools/compare/requirements.txt).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import convkit

REPO = Path(__file__).resolve().parents[3]


def model(**kwargs) -> convkit.ResNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return convkit.ResNet(**kwargs)


def binding(args: argparse.Namespace) -> None:
    for batch in (int(b) for b in args.batch.split(",")):
        m = model(variant="d", threads=args.threads, precision=args.precision)
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
        m(x)  # warm-up: the workspace grows to its size
        py, rust = [], []
        for round in range(args.rounds):
            # Each goes first in every other round: neither always follows the other.
            for turn in ("python", "rust") if round % 2 == 0 else ("rust", "python"):
                if turn == "rust":
                    rust.extend(m._model.time_forward(x, args.iters))
                    continue
                for _ in range(args.iters):
                    start = time.perf_counter()
                    m(x)
                    py.append(time.perf_counter() - start)
        py_ips, rust_ips = batch / statistics.median(py), batch / statistics.median(rust)
        print(
            f"batch {batch:>2} {args.precision}: model(x) from Python {py_ips:7.2f} images/s, "
            f"the forward pass timed in Rust {rust_ips:7.2f} images/s, Python / Rust {py_ips / rust_ips:.3f}"
        )


def write_images(folder: Path, count: int) -> list[Path]:
    """JPEGs (quality 90, 4:2:0) of 0.1-0.3 megapixels: smooth noise, as sizes of web photos."""
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(300, 600, 2))
        coarse = (rng.random((h // 12 + 2, w // 12 + 2, 3)) * 255).astype(np.uint8)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(coarse).resize((w, h), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def in_process(m: convkit.ResNet, paths: list[Path], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        x = convkit.preprocess(paths[i : i + batch], preprocess="timm")
        m(x)
    return len(paths) / (time.perf_counter() - start)


def phases(m: convkit.ResNet, paths: list[Path], batch: int) -> tuple[float, float]:
    """images/s of decoding and preprocessing alone, and of the forward passes alone."""
    decode = infer = 0.0
    for i in range(0, len(paths), batch):
        start = time.perf_counter()
        x = convkit.preprocess(paths[i : i + batch], preprocess="timm")
        decode += time.perf_counter() - start
        start = time.perf_counter()
        m(x)
        infer += time.perf_counter() - start
    return len(paths) / decode, len(paths) / infer


def onnxruntime(session, paths: list[Path], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        x = convkit.preprocess(paths[i : i + batch], preprocess="timm")
        session.run(None, {"x": x})
    return len(paths) / (time.perf_counter() - start)


def on_ray(example, folder: Path, weights: Path, actors: int, threads: int, batch: int, count: int) -> tuple[float, float]:
    """(images/s from the first batch out to the last, i.e. the steady state; images/s
    of the whole run, actor start-up included)."""
    start = time.perf_counter()
    ds = example.predictions([str(folder)], weights=str(weights), actors=actors, threads=threads, batch_size=batch)
    first, seen = None, 0
    for rows in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n = len(rows["path"])
        if first is None:
            first, first_n = time.perf_counter(), n
        seen += n
    end = time.perf_counter()
    assert seen == count, f"{seen} of {count} images"
    return (seen - first_n) / (end - first), seen / (end - start)


def pipeline(args: argparse.Namespace) -> None:
    import importlib.util

    import ray

    sys.path.insert(0, str(REPO / "tools" / "compare"))
    import compare  # the ONNX graph of the same variant and weights
    from safetensors.numpy import load_file

    spec = importlib.util.spec_from_file_location("ray_batch_inference", REPO / "examples" / "ray_batch_inference.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    tmp = Path(tempfile.mkdtemp(prefix="convkit-throughput-"))
    folder = tmp / "images"
    folder.mkdir()
    paths = write_images(folder, args.images)
    weights = tmp / "d.safetensors"
    convkit.save_seeded_weights(weights, "d", seed=0)
    m = model(variant="d", weights=weights, threads=2)
    session = compare.ort_session(compare.build_onnx("d", load_file(str(weights))), 2)
    x = convkit.preprocess(paths[:4], preprocess="timm")
    (ort_logits,) = session.run(None, {"x": x})
    print(f"onnxruntime against convkit: max|diff| / max|logit| = {np.abs(ort_logits - m(x)).max() / np.abs(ort_logits).max():.1e}")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            results.setdefault("in process, 2 threads", []).append(in_process(m, paths, args.batch))
            decode, infer = phases(m, paths, args.batch)
            results.setdefault("  of which decode + preprocess alone (2 threads)", []).append(decode)
            results.setdefault("  of which the forward passes alone (2 threads)", []).append(infer)
            steady, whole = on_ray(example, folder, weights, 1, 2, args.batch, len(paths))
            results.setdefault("Ray, 1 actor x 2 threads", []).append(steady)
            results.setdefault("Ray, 1 actor x 2 threads, start-up included", []).append(whole)
            steady, whole = on_ray(example, folder, weights, 2, 1, args.batch, len(paths))
            results.setdefault("Ray, 2 actors x 1 thread", []).append(steady)
            results.setdefault("Ray, 2 actors x 1 thread, start-up included", []).append(whole)
            results.setdefault("onnxruntime 2 threads (convkit's preprocessing)", []).append(
                onnxruntime(session, paths, args.batch)
            )
    finally:
        ray.shutdown()
    base = statistics.median(results["in process, 2 threads"])
    print(f"{len(paths)} JPEGs, batch {args.batch}, median of {args.rounds} rounds (images/s, share of in process):")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:<50} {med:7.2f}  {med / base:.2f}   rounds: {', '.join(f'{v:.1f}' for v in values)}")


def preprocess(args: argparse.Namespace) -> None:
    import skimage.data
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="convkit-preprocess-"))
    paths = []
    for name in ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"]:
        img = Image.fromarray(getattr(skimage.data, name)())
        img.save(tmp / f"{name}.jpg", quality=90)
        img.save(tmp / f"{name}.png")
        paths += [tmp / f"{name}.jpg", tmp / f"{name}.png"]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)

    def pillow(path: Path) -> np.ndarray:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        size = (256, 256 * h // w) if w <= h else (256 * w // h, 256)
        img = img.resize(size, Image.BICUBIC)
        top, left = round((img.size[1] - 224) / 2), round((img.size[0] - 224) / 2)
        crop = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)
        return ((crop / np.float32(255) - mean) / std).transpose(2, 0, 1)

    def ours(path: Path) -> np.ndarray:
        return convkit.preprocess(path, preprocess="timm")

    for p in paths:
        assert np.array_equal(ours(p), pillow(p)), p
    times: dict[str, list[float]] = {"convkit": [], "Pillow + ToTensor/Normalize in numpy": []}
    for _ in range(args.rounds):
        for name, fn in zip(times, (ours, pillow)):
            start = time.perf_counter()
            for _ in range(10):
                for p in paths:
                    fn(p)
            times[name].append(10 * len(paths) / (time.perf_counter() - start))
    print(f"{len(paths)} files (5 photographs as JPEG and PNG), one core, median of {args.rounds} rounds:")
    for name, values in times.items():
        print(f"  {name:<40} {statistics.median(values):7.1f} images/s   rounds: {', '.join(f'{v:.0f}' for v in values)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("binding")
    b.add_argument("--batch", default="1,16")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--precision", default="f32")
    b.add_argument("--rounds", type=int, default=10)
    b.add_argument("--iters", type=int, default=10)
    q = sub.add_parser("pipeline")
    q.add_argument("--images", type=int, default=256)
    q.add_argument("--batch", type=int, default=16)
    q.add_argument("--rounds", type=int, default=3)
    r = sub.add_parser("preprocess")
    r.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    {"binding": binding, "pipeline": pipeline, "preprocess": preprocess}[args.command](args)


if __name__ == "__main__":
    main()
