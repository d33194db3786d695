"""Every bad input gives a convkit exception (also the built-in one a Python user
catches) whose message names what is wrong; nothing crashes."""

from __future__ import annotations

import errno
import re
import warnings

import numpy as np
import pytest

import convkit
from convkit import ConfigError, FileError, ImageError, InputError, WeightsError


@pytest.fixture(scope="module")
def seeded():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return convkit.ResNet("d", threads=1)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((1, 3, 64, 64), np.float64), "dtype float64"),
        (np.zeros((1, 3, 64, 64), np.uint8), "dtype uint8"),
        (np.zeros((1, 3, 64, 64), ">f4"), "dtype >f4"),
        (np.zeros((3, 64, 64), np.float32), "x[None]"),
        (np.zeros((1, 1, 3, 64, 64), np.float32), "4 dimensions"),
        (np.zeros((1, 4, 64, 64), np.float32), "4 channels"),
        (np.zeros((1, 3, 0, 64), np.float32), "zero-size dim"),
        ([[[[0.0]]]], "is a list"),
        ("x.npy", "is a str"),
    ],
)
def test_bad_inputs_raise_input_error(seeded, x, message):
    with pytest.raises(InputError, match=re.escape(message)) as e:
        seeded(x)
    assert isinstance(e.value, ValueError) and isinstance(e.value, convkit.Error)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_with_their_index(seeded, value):
    x = np.zeros((2, 3, 64, 64), np.float32)
    x[1, 2, 5, 7] = value
    with pytest.raises(InputError, match=r"\[n, c, y, x\] = \[1, 2, 5, 7\]"):
        seeded(x)
    with pytest.raises(InputError, match=r"\[n, y, x, c\] = \[1, 5, 7, 2\]"):
        seeded(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="nhwc")


def test_an_unknown_layout_is_a_config_error(seeded):
    with pytest.raises(ConfigError, match="layout"):
        seeded(np.zeros((1, 3, 64, 64), np.float32), layout="chw")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "e"}, "variant"),
        ({"depth": 34}, "depth"),
        ({"precision": "f16"}, "precision"),
        ({"kxk": "fast"}, "kxk"),
        ({"isa": "avx9"}, "isa"),
        ({"threads": 0}, "threads"),
        ({"threads": 5000}, "threads"),
        ({"threads": -1}, "threads"),
        ({"sub_batch": 0}, "sub_batch"),
        ({"depth": "50"}, "depth"),
    ],
)
def test_bad_options_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        convkit.ResNet(**kwargs)


def test_a_missing_weights_file_is_an_os_error(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(FileError) as e:
        convkit.ResNet("d", weights=missing)
    assert isinstance(e.value, OSError)
    assert e.value.errno == errno.ENOENT and e.value.filename == str(missing)


def test_a_corrupt_weights_file_is_named(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(WeightsError, match="junk.safetensors"):
        convkit.ResNet("d", weights=bad)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.safetensors"):
        convkit.ResNet("d", weights=empty)


def test_weights_of_another_variant_are_refused(weights_d):
    with pytest.raises(WeightsError, match="ResNet-50-D") as e:
        convkit.ResNet("a", weights=weights_d)
    assert isinstance(e.value, ValueError)


def test_bad_images_raise_image_or_file_errors(seeded, tmp_path, images):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="junk.jpg"):
        convkit.preprocess(junk)
    with pytest.raises(ImageError, match="image 0"):
        convkit.preprocess([b"not an image either"])
    truncated = tmp_path / "cut.jpg"
    jpeg = next(p for p in images if p.suffix == ".jpg").read_bytes()
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageError, match="truncated"):
        seeded.classify([truncated])
    with pytest.raises(FileError) as e:
        convkit.preprocess(tmp_path / "missing.png")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FileError, match="directory"):
        convkit.preprocess(tmp_path)
    with pytest.raises(InputError, match=r"\[h, w, 3\]"):
        convkit.preprocess(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(InputError, match="image 1"):
        seeded.classify([images[0], 42])
    with pytest.raises(ConfigError, match="preprocess"):
        convkit.preprocess(images[0], preprocess="keras")
    with pytest.raises(ConfigError, match="top"):
        seeded.classify(images[:1], top=0)


def test_errors_name_the_image_by_its_place_or_path(seeded, images, weights_d):
    with pytest.raises(ImageError, match="image 9: "):
        seeded.classify([*images[:9], b"not an image"], batch_size=4)
    import convkit.ray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor = convkit.ray.Predictor(weights_d, threads=1)
    batch = {
        "bytes": np.array([images[0].read_bytes(), b"not an image"], dtype=object),
        "path": np.array(["good.jpg", "s3://bucket/broken.jpg"]),
    }
    with pytest.raises(ImageError, match="s3://bucket/broken.jpg"):
        predictor(batch)
    with pytest.raises(KeyError, match="no column 'image'"):
        convkit.ray.Predictor(weights_d, threads=1, column="image")(batch)
