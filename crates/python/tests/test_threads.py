"""One model called from several Python threads at once: every call returns exactly
what it returns alone."""

from __future__ import annotations

import sys
import threading
import time
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


def test_the_gil_is_released_for_the_forward_pass():
    """With the switch interval at 1000 s this thread gives up the GIL only where code
    releases it: another thread can count only while the forward pass has let go."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = convkit.ResNet("d", threads=1)
    x = np.random.default_rng(6).standard_normal((1, 3, 96, 96), dtype=np.float32)
    model(x)
    counter = [0]
    done = threading.Event()
    started = threading.Event()

    def count():
        started.set()
        while not done.is_set():
            counter[0] += 1
            time.sleep(0.0001)  # gives the GIL back, and waits to take it again

    interval = sys.getswitchinterval()
    counter_thread = threading.Thread(target=count)
    try:
        counter_thread.start()
        started.wait()
        sys.setswitchinterval(1000.0)
        advanced = 0
        for _ in range(20):
            before = counter[0]
            model(x)  # between these two reads only the forward pass can release the GIL
            advanced += counter[0] - before
    finally:
        sys.setswitchinterval(interval)
        done.set()
        counter_thread.join()
    assert advanced > 0, "no other thread ran during 20 forward passes: the GIL was held"
