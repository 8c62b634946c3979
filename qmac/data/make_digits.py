"""Write ``digits.npz``: scikit-learn's 1,797 real 8×8 handwritten digits and qmac's fixed split.

Run once (needs scikit-learn, the ``bench`` extra); the result is committed, so qmac itself never
needs scikit-learn. The split is stratified by label, 360 test images (20%), ``random_state=0``
of :func:`sklearn.model_selection.train_test_split`. Pixels are the dataset's integers 0..16.
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main():
    digits = load_digits()
    images = digits.data.astype(np.uint8)          # integers 0..16
    labels = digits.target.astype(np.uint8)
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=360, random_state=0, stratify=labels)
    out = Path(__file__).with_name("digits.npz")
    np.savez_compressed(out, images=images, labels=labels, train_index=np.sort(train),
                        test_index=np.sort(test))
    print(f"wrote {out}: {len(train)} train, {len(test)} test images")


if __name__ == "__main__":
    main()
