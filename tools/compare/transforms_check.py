#!/usr/bin/env python3
"""convkit's preprocessing against torchvision's and timm's own transforms (not a
re-implementation): every image through `T.Compose([Resize(256), CenterCrop(224),
ToTensor(), Normalize])` and timm's resolved eval transform for resnet50d, and through
`convkit.preprocess`; prints how many values of each tensor are equal.

Needs torch, torchvision, timm, Pillow and the convkit package in one venv (torch's
wheels are gigabytes, so CI compares with Pillow alone, in crates/cli/tests/pillow.rs):

    python tools/compare/transforms_check.py photos/*.jpg photos/*.png
"""
import sys

import numpy as np
import timm
import torchvision.transforms as T
from PIL import Image

import convkit

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main(files):
    torchvision = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224),
                             T.ToTensor(), T.Normalize(MEAN, STD)])
    config = timm.data.resolve_data_config({}, model=timm.create_model("resnet50d", pretrained=False))
    recipes = {"torchvision": torchvision, "timm": timm.data.create_transform(**config, is_training=False)}
    failed = 0
    for name, transform in recipes.items():
        ours = convkit.preprocess(files, preprocess=name)
        for f, got in zip(files, ours):
            want = transform(Image.open(f).convert("RGB")).numpy()
            equal = int((got == want).sum())
            failed += equal != want.size
            print(f"{name:<12} {f}: {equal} of {want.size} values equal")
    print(f"{len(files)} files, both recipes: {'all equal' if not failed else f'{failed} tensors differ'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
