"""The package against the CLI: the same logits bitwise, the same classes, the same
counts; inputs of every kind the API takes."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import cli_json, run_cli

import convkit


def model(*args, **kwargs) -> convkit.ResNet:
    """A model, without the seeded-weights warning (tested on its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return convkit.ResNet(*args, **kwargs)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def test_info_names_the_kernels_this_cpu_runs(cli):
    info = convkit.info()
    want = cli_json(cli, "info")
    assert info["cpu"] == want["cpu"]
    assert info["families"] == want["kernel_registry"]["families"]
    assert info["family"] in info["families"]
    assert info["kernels"] == want["kernels"]
    assert info["isa"] == want["isa"] and info["convkit"] == want["convkit"] == convkit.__version__
    assert info["caches"]["l1d"] == want["caches"]["l1d"] and info["caches"]["l2"] == want["caches"]["l2"]
    for peak in ("f32_gflops_per_core", "bf16_gflops_per_core"):
        assert math.isfinite(info["peaks"][peak]) and info["peaks"][peak] > 0
    assert "peaks" not in convkit.info(peaks=False)


def test_info_from_the_command_line_names_the_family():
    out = subprocess.run(
        [sys.executable, "-c", "import convkit; print(convkit.info())"], capture_output=True, text=True, check=True
    ).stdout
    assert "'family': '" in out and "'kernels': {" in out


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_logits_equal_the_cli_run_bitwise(cli, weights_d, tmp_path, precision):
    x = np.random.default_rng(11).standard_normal((3, 3, 96, 80), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    run_cli(
        cli, "run", "--variant", "d", "--weights", str(weights_d), "--precision", precision,
        "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "logits.npy"), "--threads", "2",
    )  # fmt: skip
    want = np.load(tmp_path / "logits.npy")
    m = model("d", weights=weights_d, precision=precision, threads=2)
    got = m(x)
    assert got.dtype == np.float32 and got.shape == (3, 1000)
    assert np.array_equal(bits(got), bits(want))
    # The thread count does not change a bit.
    assert np.array_equal(bits(model("d", weights=weights_d, precision=precision, threads=1).run(x)), bits(want))


def test_int8_file_from_calibrate_gives_the_cli_logits(cli, weights_d, tmp_path):
    int8 = tmp_path / "d.int8.safetensors"
    run_cli(cli, "calibrate", "--variant", "d", "--weights", str(weights_d), "--seeded", "2", "-o", str(int8))
    x = np.random.default_rng(12).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run_cli(
        cli, "run", "--variant", "d", "--weights", str(int8), "--precision", "int8",
        "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "logits.npy"), "--threads", "2",
    )  # fmt: skip
    m = model("d", weights=int8, precision="int8", threads=2)
    assert m.precision == "int8" and m.kernel == convkit.info(peaks=False)["kernels"]["int8"]
    got = m(x)
    assert np.array_equal(bits(got), bits(np.load(tmp_path / "logits.npy")))
    want = model("d", weights=weights_d, threads=2)(x)
    assert np.abs(got - want).max() / np.abs(want).max() < 5e-2
    with pytest.raises(convkit.WeightsError, match="convkit calibrate"):
        model("d", weights=weights_d, precision="int8")
    with pytest.raises(convkit.WeightsError, match="int8"):
        model("d", weights=int8)


def test_properties_match_the_cli(cli, weights_d):
    m = model("d", weights=weights_d, precision="bf16", threads=1)
    row = next(v for v in cli_json(cli, "info")["variants"] if v["variant"] == "D")
    assert (m.variant, m.depth, m.precision, m.threads, m.classes) == ("d", 50, "bf16", 1, 1000)
    assert (m.params, m.macs) == (row["params"], row["macs"])
    assert m.kernel == convkit.info(peaks=False)["kernels"]["bf16"]
    assert m.isa == m.kernel.split(".")[0]
    assert m.weights == str(weights_d) and m.seed == 1
    assert "ResNet-50-D bf16" in repr(m)
    assert m.macs_at(112, 112) < m.macs


def test_isa_mask_picks_the_family():
    assert model("d", isa="portable", threads=1).isa == "portable"
    assert model("d", precision="bf16", isa="portable", threads=1).kernel == "portable.bf16"


@pytest.fixture(scope="module")
def seeded():
    return model("d", threads=2)


def test_views_and_layouts_give_the_same_logits(seeded, x_small):
    want = bits(seeded(x_small))
    # A strided view (every other row of a taller batch) is copied, not refused.
    tall = np.repeat(x_small, 2, axis=2)
    view = tall[:, :, ::2, :]
    assert not view.flags.c_contiguous and np.array_equal(view, x_small)
    assert np.array_equal(bits(seeded(view)), want)
    # Read-only arrays, __array__ objects, NHWC.
    ro = x_small.copy()
    ro.flags.writeable = False
    assert np.array_equal(bits(seeded.run(ro)), want)

    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return x_small

    assert np.array_equal(bits(seeded(ArrayLike())), want)
    nhwc = np.ascontiguousarray(x_small.transpose(0, 2, 3, 1))
    assert np.array_equal(bits(seeded(nhwc, layout="nhwc")), want)
    # A non-contiguous NHWC view of the NCHW array: copied to C order, same logits.
    assert np.array_equal(bits(seeded(x_small.transpose(0, 2, 3, 1), layout="nhwc")), want)


def test_dlpack_producers_are_read_without_torch(seeded, x_small):
    class DLPackOnly:
        """Exposes nothing but the DLPack protocol, as a torch tensor does."""

        def __init__(self, a):
            self._a = a

        def __dlpack__(self, **kwargs):
            return self._a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    assert np.array_equal(bits(seeded(DLPackOnly(x_small))), bits(seeded(x_small)))


def test_torch_tensors_in(seeded, x_small):
    torch = pytest.importorskip("torch", reason="torch is not a dependency; this runs where it is installed")
    want = bits(seeded(x_small))
    assert np.array_equal(bits(seeded(torch.from_numpy(x_small))), want)
    nhwc = torch.from_numpy(x_small).permute(0, 2, 3, 1)  # a strided view: copied once
    assert np.array_equal(bits(seeded(nhwc, layout="nhwc")), want)


def test_misaligned_buffers_are_copied(seeded, x_small):
    raw = np.zeros(x_small.nbytes + 1, np.uint8)
    misaligned = np.frombuffer(raw.data, np.float32, x_small.size, offset=1).reshape(x_small.shape)
    misaligned[...] = x_small
    assert not misaligned.flags.aligned
    assert np.array_equal(bits(seeded(misaligned)), bits(seeded(x_small)))


def test_any_batch_size(seeded, x_small):
    assert seeded(x_small[:0]).shape == (0, 1000)
    one = [seeded(x_small[i : i + 1]) for i in range(2)]
    assert np.array_equal(bits(np.concatenate(one)), bits(seeded(x_small)))
    five = np.concatenate([x_small, x_small, x_small[:1]])
    assert np.array_equal(bits(seeded(five)[:2]), bits(seeded(x_small)))


def test_seeded_weights_warn():
    with pytest.warns(UserWarning, match="not trained"):
        convkit.ResNet("d", threads=1)


def test_a_saved_file_loads_as_its_seeded_model(tmp_path, x_small):
    path = tmp_path / "b.safetensors"
    convkit.save_seeded_weights(path, "b", seed=4)
    with pytest.warns(UserWarning, match="seed 4"):
        from_file = convkit.ResNet("b", weights=path, threads=1)
    assert np.array_equal(bits(from_file(x_small)), bits(model("b", seed=4, threads=1)(x_small)))


def test_classify_matches_the_cli(cli, weights_d, images):
    want = cli_json(cli, "classify", *map(str, images), "--variant", "d", "--weights", str(weights_d), "--top", "5")
    m = model("d", weights=weights_d)
    got = m.classify(images, top=5, batch_size=8)
    assert [r["file"] for r in got] == [r["file"] for r in want["results"]]
    for g, w in zip(got, want["results"]):
        assert [c["class"] for c in g["top"]] == [c["class"] for c in w["top"]]
        assert [c["name"] for c in g["top"]] == [c["name"] for c in w["top"]]
        assert [np.float32(c["probability"]) for c in g["top"]] == [np.float32(c["probability"]) for c in w["top"]]
    # The same images as bytes, decoded arrays and preprocessed arrays: the same classes.
    from PIL import Image

    as_bytes = m.classify([p.read_bytes() for p in images[:4]])
    ready = m.classify(convkit.preprocess(images[:4]))
    for row in (as_bytes, ready):
        assert [r["file"] for r in row] == [None] * 4
        assert [r["top"] for r in row] == [g["top"] for g in got[:4]]
    # Pixels Pillow decoded: the same as convkit's decode, JPEGs included.
    decoded = m.classify([np.asarray(Image.open(p).convert("RGB")) for p in images[:4]])
    assert [r["top"] for r in decoded] == [g["top"] for g in got[:4]]


def test_preprocess_of_files_bytes_and_decoded_pixels_agree(images):
    from PIL import Image

    for recipe in ("torchvision", "timm"):
        x = convkit.preprocess(images[:3], preprocess=recipe)
        assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
        for i, path in enumerate(images[:3]):
            one = convkit.preprocess(path, preprocess=recipe)
            assert np.array_equal(one, x[i])
            assert np.array_equal(convkit.preprocess(path.read_bytes(), preprocess=recipe), one)
            pixels = np.asarray(Image.open(path).convert("RGB"))
            assert np.array_equal(convkit.preprocess(pixels, preprocess=recipe), one)


def test_preprocess_equals_pillow_and_torchvision_order(images):
    """Pillow's Resize + CenterCrop, then ToTensor and Normalize in float32 as torchvision
    computes them: equal bit for bit on PNGs and JPEGs (4:2:0 and 4:4:4)."""
    from PIL import Image

    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    for recipe, resample in (("torchvision", Image.BILINEAR), ("timm", Image.BICUBIC)):
        for path in images[:6]:
            img = Image.open(path).convert("RGB")
            w, h = img.size
            size = (256, 256 * h // w) if w <= h else (256 * w // h, 256)
            img = img.resize(size, resample)
            top, left = round((img.size[1] - 224) / 2), round((img.size[0] - 224) / 2)
            crop = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)
            want = ((crop / np.float32(255) - mean) / std).transpose(2, 0, 1)
            assert np.array_equal(convkit.preprocess(path, preprocess=recipe), want), (recipe, path.name)


def test_the_wheel_carries_types_and_docs():
    from importlib.resources import files

    package = files("convkit")
    assert (package / "py.typed").is_file() and (package / "_convkit.pyi").is_file()
    stub = (package / "_convkit.pyi").read_text()
    for name in ("class Model", "def preprocess_many", "def info"):
        assert name in stub
    for api in (convkit.ResNet, convkit.ResNet.run, convkit.ResNet.classify, convkit.preprocess, convkit.info):
        assert api.__doc__ and len(api.__doc__) > 40, api


def test_the_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## From Python") :]
    snippet = section[section.index("```python\n") + len("```python\n") :]
    snippet = snippet[: snippet.index("```")]
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "d.safetensors").is_file()
