"""Reference labels for tests/dbscan.rs: scikit-learn's DBSCAN on synthetic blobs.

Writes tests/data/dbscan_blobs.csv and tests/data/dbscan_lattice.csv (see
below). dbscan_blobs.csv: 2000 points in 4 dimensions (4 Gaussian
blobs of different sizes and spreads, and uniform background points, from a
fixed seed), each with scikit-learn's label (-1 for noise) for eps = 0.35,
min_samples = 10. The coordinates are written with 3 decimals; the points
clustered are those decimals read as float64 and rounded to float32, as the
Rust test reads them (gevaldi clusters f32 latents, in f64 arithmetic).

To rerun (from the repository root):

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn numpy
    /tmp/skl/bin/python tests/data/dbscan_reference.py

Made with scikit-learn 1.9.1 and numpy 2.4.6.
"""

import os

import numpy as np
from sklearn.cluster import DBSCAN

EPS, MIN_SAMPLES, DIM = 0.35, 10, 4

rng = np.random.default_rng(20240917)
# (size, spread, centre) of each blob.
blobs = [
    (700, 0.25, [0.0, 0.0, 0.0, 0.0]),
    (450, 0.30, [2.5, 0.0, 0.0, 0.0]),
    (250, 0.20, [0.0, 2.5, 0.5, 0.0]),
    (120, 0.35, [1.5, 1.5, -1.5, 1.0]),
]
parts = [rng.normal(c, s, size=(n, DIM)) for n, s, c in blobs]
background = 2000 - sum(n for n, _, _ in blobs)
parts.append(rng.uniform(-2.0, 4.0, size=(background, DIM)))
points = np.concatenate(parts)
rng.shuffle(points)

text = [[f"{v:.3f}" for v in row] for row in points]
x = np.array([[float(v) for v in row] for row in text]).astype(np.float32)
x = x.astype(np.float64)

# No pair may sit at eps to rounding: scikit-learn compares squared
# distances with eps^2, gevaldi distances with eps.
d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
assert np.abs(d - EPS).min() > 1e-9, "a pair at distance eps: change the seed"

labels = DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, algorithm="kd_tree").fit(x).labels_

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dbscan_blobs.csv")
with open(out, "w") as f:
    f.write("x0,x1,x2,x3,label\n")
    for row, label in zip(text, labels):
        f.write(",".join(row) + f",{label}\n")

sizes = np.bincount(labels[labels >= 0])
print(f"blobs: {len(sizes)} clusters of sizes {sorted(sizes.tolist(), reverse=True)}, "
      f"{(labels < 0).sum()} noise points")

# tests/data/dbscan_lattice.csv: 600 distinct points of a 40 x 40 integer
# lattice, denser in the middle, with eps = 1 and min_samples = 4: every
# neighbour sits at exactly eps (squared distances are exact integers), and
# clusters touch through shared border points.
LATTICE_EPS, LATTICE_MIN = 1.0, 4
weights = np.exp(-(((np.arange(40) - 20) / 12.0) ** 2))
w = np.outer(weights, weights).ravel()
cells = rng.choice(40 * 40, size=600, replace=False, p=w / w.sum())
lattice = np.stack([cells // 40, cells % 40], axis=1).astype(np.float64)
labels = DBSCAN(eps=LATTICE_EPS, min_samples=LATTICE_MIN, algorithm="kd_tree").fit(lattice).labels_
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dbscan_lattice.csv")
with open(out, "w") as f:
    f.write("x0,x1,label\n")
    for row, label in zip(lattice.astype(int), labels):
        f.write(f"{row[0]},{row[1]},{label}\n")
sizes = np.bincount(labels[labels >= 0])
print(f"lattice: {len(sizes)} clusters of sizes {sorted(sizes.tolist(), reverse=True)}, "
      f"{(labels < 0).sum()} noise points")
