"""Ray Data on a local 2-CPU cluster: the repository's example gives the classes the CLI
gives, and a model takes its threads from the CPUs Ray assigned."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import REPO, cli_json

ray = pytest.importorskip("ray", reason="the Ray tests need ray[data] (pip install 'ray[data]')")
pytestmark = pytest.mark.ray

import convkit.ray  # noqa: E402 - after the skip


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def example():
    path = REPO / "examples" / "ray_batch_inference.py"
    spec = importlib.util.spec_from_file_location("ray_batch_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("actors, threads", [(None, None), (2, 1)])
def test_the_example_classifies_as_the_cli(local_ray, example, cli, weights_d, images, actors, threads):
    want = cli_json(cli, "classify", *map(str, images), "--variant", "d", "--weights", str(weights_d), "--top", "5")
    want = {r["file"]: r["top"] for r in want["results"]}
    rows = example.predictions(
        [str(images[0].parent)], weights=str(weights_d), actors=actors, threads=threads, batch_size=8
    ).take_all()
    assert sorted(r["path"] for r in rows) == sorted(want)
    for row in rows:
        top = want[row["path"]]
        assert row["top_classes"].tolist() == [c["class"] for c in top], row["path"]
        assert row["top_names"].tolist() == [c["name"] for c in top]
        assert row["top_probabilities"].tolist() == [np.float32(c["probability"]) for c in top]


def test_the_example_writes_json_lines(local_ray, example, weights_d, images, tmp_path):
    out = tmp_path / "predictions"
    example.predictions([str(p) for p in images[:5]], weights=str(weights_d), batch_size=2).write_json(str(out))
    lines = [json.loads(line) for f in sorted(out.iterdir()) for line in f.read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == sorted(str(p) for p in images[:5])
    assert all(len(r["top_classes"]) == 5 and len(r["top_names"]) == 5 for r in lines)


def test_a_model_takes_the_cpus_ray_assigned(local_ray):
    @ray.remote
    def threads_of_a_model():
        return convkit.ray.assigned_cpus(), convkit.ray.Predictor(top=1).model.threads

    for cpus in (1, 2):
        assert ray.get(threads_of_a_model.options(num_cpus=cpus).remote()) == (cpus, cpus)


def test_preprocessed_tensors_go_through_the_predictor(local_ray, weights_d, images):
    x = convkit.preprocess(images[:4])
    ds = ray.data.from_items([{"id": i, "x": x[i]} for i in range(4)])
    rows = ds.map_batches(
        convkit.ray.Predictor,
        fn_constructor_kwargs={"weights": str(weights_d), "column": "x", "top": 3, "logits": True},
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=2,
        batch_size=2,
        batch_format="numpy",
    ).take_all()
    rows.sort(key=lambda r: r["id"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = convkit.ResNet("d", weights=weights_d, threads=1)(x)
    assert np.array_equal(np.stack([r["logits"] for r in rows]).view(np.uint32), want.view(np.uint32))
    assert [r["top_classes"].tolist() for r in rows] == [np.argsort(-w)[:3].tolist() for w in want]


def test_an_actor_that_dies_mid_batch_is_replaced_and_its_batch_retried(local_ray, weights_d, images, tmp_path):
    """Ray Data's actor pools restart a dead actor (max_restarts=-1) and retry the batch it
    held (max_task_retries=-1): every image still gets exactly one row."""
    marker = tmp_path / "died"

    class DiesOnce(convkit.ray.Predictor):
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # the process is gone mid-batch, as on a lost machine
            return super().__call__(batch)

    paths = sorted(str(p) for p in images[:12])
    rows = (
        # Reads at zero CPUs, as the example does: the actor holds both CPUs.
        ray.data.read_binary_files(paths, include_paths=True, num_cpus=0, concurrency=1)
        .map_batches(
            DiesOnce,
            fn_constructor_kwargs={"weights": str(weights_d), "top": 1},
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=2,
            batch_size=4,
            batch_format="numpy",
        )
        .take_all()
    )
    assert marker.exists(), "the first actor died"
    assert sorted(r["path"] for r in rows) == paths
