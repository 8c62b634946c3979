"""The bundled example data: scikit-learn's 1,797 real 8×8 handwritten digits, with a fixed split.

``qmac/data/digits.npz`` holds the images as integers 0..16 (the dataset's own values), their
labels, and qmac's fixed split: 1,437 training and 360 test images, stratified by label
(``train_test_split(test_size=360, random_state=0, stratify=labels)``, written once by
``qmac/data/make_digits.py``). The float networks see ``pixels / 16``; the hardware sees the
integers themselves (input scale 1/16, range 0..16).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np


__all__ = ["Digits", "load_digits", "INPUT_SCALE", "INPUT_MIN", "INPUT_MAX"]

INPUT_SCALE = 1.0 / 16.0
INPUT_MIN = 0
INPUT_MAX = 16


@dataclass(frozen=True)
class Digits:
    """Integer images (n × 64, 0..16) and labels (n) of the training and test splits."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def folds(self, k, seed=0):
        """``k`` stratified (train, test) index splits of all 1,797 images, for spreads."""
        x = np.concatenate([self.train_x, self.test_x])
        y = np.concatenate([self.train_y, self.test_y])
        rng = np.random.default_rng(seed)
        fold_of = np.empty(len(y), dtype=np.int64)
        for label in np.unique(y):
            members = np.flatnonzero(y == label)
            rng.shuffle(members)
            fold_of[members] = np.arange(len(members)) % k
        for fold in range(k):
            yield (x[fold_of != fold], y[fold_of != fold], x[fold_of == fold],
                   y[fold_of == fold])


def load_digits():
    """Load the bundled digits and their fixed split."""
    with resources.files("qmac").joinpath("data/digits.npz").open("rb") as file:
        data = np.load(file, allow_pickle=False)
        images = data["images"].astype(np.int64)
        labels = data["labels"].astype(np.int64)
        train, test = data["train_index"], data["test_index"]
    return Digits(images[train], labels[train], images[test], labels[test])
