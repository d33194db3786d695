"""Batch inference over many machines on Ray Data: classify a folder of images (or any
paths or URIs Ray can read: s3://, gs://, a list of files) with one convkit model per
actor, and write the top-5 classes of every file as JSON lines or Parquet.

    pip install ./crates/python "ray[data]>=2.51"
    python examples/ray_batch_inference.py photos/ --weights resnet50d.safetensors -o predictions/

It runs on a local Ray started for the run, or on an existing cluster when RAY_ADDRESS
is set (ray.init() reads it). Every node needs convkit installed and the weights at the
same path (or a URI each worker can fetch).

How it splits the CPUs: each actor runs one model on --threads threads and asks Ray for
that many CPUs, so Ray never places more threads on a node than it has CPUs. The
default is one actor per node with every CPU of the node (the smallest node's count),
which keeps each actor's batch on one model; --actors and --threads choose others (2
actors of 1 thread on 2 cores, say). Reading files is left at zero CPUs: it waits on
storage, and every CPU goes to the actors, which decode and preprocess their batch in
parallel (in Rust, the GIL released) before running it; as many read tasks run at once
as there are actors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

import ray

import convkit.ray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def node_cpus() -> list[int]:
    """Whole CPUs of each live node of the cluster."""
    return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]


def plan(actors: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, threads per actor): one actor per node on all its CPUs unless told, and
    never more actors than the cluster's nodes can hold at `threads` CPUs each."""
    cpus = [c for c in node_cpus() if c > 0]
    if not cpus:
        raise SystemExit("ray_batch_inference: the Ray cluster has no CPUs")
    threads = threads or min(cpus)
    fits = sum(c // threads for c in cpus)
    if fits == 0:
        raise SystemExit(f"ray_batch_inference: no node has {threads} CPUs (nodes: {cpus})")
    actors = actors or fits
    if actors > fits:
        raise SystemExit(f"ray_batch_inference: {actors} actors of {threads} CPUs do not fit the nodes' CPUs {cpus}")
    return actors, threads


def predictions(
    paths: Sequence[str],
    *,
    weights: str | None,
    variant: str = "d",
    precision: str = "f32",
    actors: int | None = None,
    threads: int | None = None,
    batch_size: int = 16,
    top: int = 5,
    preprocess: str | None = None,
) -> ray.data.Dataset:
    """The dataset of predictions: one row per image with its `path`, `top_classes`,
    `top_names` and `top_probabilities`. Lazy: writing or taking it runs the pipeline."""
    actors, threads = plan(actors, threads)
    ds = ray.data.read_binary_files(
        list(paths),
        include_paths=True,
        file_extensions=[s.lstrip(".").lower() for s in IMAGE_SUFFIXES],
        num_cpus=0,
        # Zero-CPU tasks are not limited by the CPUs: bound them, or Ray starts a worker
        # process per read task at once (measured: 8 on 2 cores, seconds of start-up).
        concurrency=actors,
    )
    return ds.map_batches(
        convkit.ray.Predictor,
        fn_constructor_kwargs={
            "weights": weights,
            "variant": variant,
            "precision": precision,
            "threads": threads,
            "column": "bytes",
            "top": top,
            "preprocess": preprocess,
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        batch_size=batch_size,
        batch_format="numpy",
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("images", nargs="+", help="image files, folders or URIs Ray can read (JPEG, PNG)")
    p.add_argument("--weights", help="safetensors weights every node can read (default: seeded, untrained)")
    p.add_argument("--variant", default="d", choices=["a", "b", "c", "d"])
    p.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    p.add_argument("--actors", type=int, help="models in the pool (default: as many as fit at --threads CPUs)")
    p.add_argument("--threads", type=int, help="threads (and Ray CPUs) of each model (default: a node's CPUs)")
    p.add_argument("--batch-size", type=int, default=16, help="images per map_batches call (default 16)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--preprocess", choices=["torchvision", "timm"], help="default: that of the weights' source")
    p.add_argument("--cpus", type=int, help="CPUs of the local Ray started when RAY_ADDRESS is not set")
    p.add_argument("--format", choices=["json", "parquet"], default="json")
    p.add_argument("-o", "--output", default="predictions", help="output folder (default: predictions/)")
    args = p.parse_args(argv)

    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # the existing cluster RAY_ADDRESS names
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False)
    try:
        start = time.perf_counter()
        ds = predictions(
            args.images,
            weights=args.weights,
            variant=args.variant,
            precision=args.precision,
            actors=args.actors,
            threads=args.threads,
            batch_size=args.batch_size,
            top=args.top,
            preprocess=args.preprocess,
        )
        if args.format == "json":
            ds.write_json(args.output)
        else:
            ds.write_parquet(args.output)
        seconds = time.perf_counter() - start
        print(f"ray_batch_inference: wrote the predictions to {args.output}/ in {seconds:.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
