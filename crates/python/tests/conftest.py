"""Fixtures shared by the tests: the `convkit` CLI (the reference the package must agree
with), weights files it exported, and images Pillow wrote."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `convkit` binary: $CONVKIT_BIN, else the workspace's release build."""
    path = Path(os.environ.get("CONVKIT_BIN", REPO / "target" / "release" / "convkit"))
    if not path.is_file():
        pytest.fail(f"no convkit CLI at {path}: run `cargo build --release -p convkit-cli` or set CONVKIT_BIN")
    return path


def run_cli(cli: Path, *args: str) -> str:
    done = subprocess.run([str(cli), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"convkit {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def cli_json(cli: Path, *args: str) -> dict:
    return json.loads(run_cli(cli, *args, "--json"))


@pytest.fixture(scope="session")
def weights_d(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet-50-D's seeded weights (seed 1), exported by the CLI."""
    path = tmp_path_factory.mktemp("weights") / "d-seed1.safetensors"
    run_cli(cli, "export", "--variant", "d", "--seed", "1", "-o", str(path))
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few dozen smooth random photographs-to-be of odd sizes, PNG and JPEG (4:2:0 and
    4:4:4), written by Pillow."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(30):
        h, w = (int(v) for v in rng.integers(180, 420, 2))
        coarse = (rng.random((h // 16 + 2, w // 16 + 2, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        if i % 3 == 0:
            path = folder / f"photo{i:02d}.png"
            img.save(path)
        else:
            path = folder / f"photo{i:02d}.jpg"
            img.save(path, quality=90, subsampling=2 if i % 3 == 1 else 0)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def x_small() -> np.ndarray:
    """Two images of 64 x 64, NCHW float32: small enough to run many times."""
    return np.random.default_rng(3).standard_normal((2, 3, 64, 64), dtype=np.float32)
