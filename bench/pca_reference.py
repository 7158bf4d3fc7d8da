"""Reference for src/pca.rs `matches_numpys_svd_on_a_five_dimensional_cloud`:
numpy's SVD of the centred f32 points, axes signed with their largest entry
positive, variances S² / n. Run: python bench/pca_reference.py (numpy)."""
import numpy as np

P = np.array([[np.sin(0.7 * i + 1.3 * j * j) * (j + 1) + 0.1 * i * (j == 2)
               for j in range(5)] for i in range(30)], np.float32).astype(np.float64)
X = P - P.mean(0)
U, S, Vt = np.linalg.svd(X, full_matrices=False)
for v in Vt:
    if v[np.argmax(np.abs(v))] < 0:
        v *= -1
print("variances", list(map(float, S ** 2 / len(P))))
print("components", [list(map(float, v)) for v in Vt])
