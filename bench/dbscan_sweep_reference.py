"""Reference for tests/dbscan.rs `the_labels_equal_scikit_learns_over_a_sweep`:
300 points in 3-d (three anisotropic blobs and a uniform background), f32
coordinates, scikit-learn's DBSCAN labels for each (eps, min_samples) of
the sweep, one column each. Run: python bench/dbscan_sweep_reference.py >
tests/data/dbscan_sweep.csv (numpy, scikit-learn).
"""
import numpy as np
from sklearn.cluster import DBSCAN

SWEEP = [(0.2, 1), (0.2, 2), (0.3, 5), (0.45, 8), (0.6, 15), (1.0, 40)]
rng = np.random.default_rng(7)
blobs = [rng.normal(c, s, size=(n, 3)) for c, s, n in
         [((0, 0, 0), (0.3, 0.1, 0.2), 90), ((1.2, 0.4, 0), (0.15, 0.3, 0.1), 80), ((0.5, 1.5, 1), 0.25, 70)]]
pts = np.vstack(blobs + [rng.uniform(-1, 2.5, size=(60, 3))])
pts = pts[rng.permutation(len(pts))].astype(np.float32).astype(np.float64)
cols = [DBSCAN(eps=e, min_samples=m, algorithm="brute").fit(pts).labels_ for e, m in SWEEP]
print("x0,x1,x2," + ",".join(f"eps{e}_min{m}" for e, m in SWEEP))
for i, p in enumerate(pts):
    print(",".join(repr(float(v)) for v in p) + "," + ",".join(str(c[i]) for c in cols))
