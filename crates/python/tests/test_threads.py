"""One model called from several Python threads at once: every call returns exactly
what it returns alone."""

from __future__ import annotations

import threading
import warnings

import numpy as np

import convkit


def test_concurrent_calls_give_the_results_of_one_thread():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = convkit.ResNet("d", threads=2)
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((2, 3, 64, 64), dtype=np.float32) for _ in range(6)]
    want = [model(x) for x in inputs]
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker(indices):
        try:
            start.wait()
            for _ in range(3):
                for i in indices:
                    got[i] = model(inputs[i])
                    assert np.array_equal(got[i].view(np.uint32), want[i].view(np.uint32)), f"input {i}"
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(range(k, 6, 3),)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(got) == list(range(6))
