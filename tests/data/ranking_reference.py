"""Reference values for tests/ranking.rs, computed independently of gevaldi.

Run: python3 tests/data/ranking_reference.py (numpy 2.4.6, scipy 1.17.1).

- MAD's power iteration is VITA-Group/MAD's own `power_iteration`
  (global_ranking.py at c53184b, copied below verbatim but for a seeded
  start) on the matrix its `temp_rank_imgnet` builds: B[i,i] = 1,
  B[i,j] = A[i,j] / A[j,i], B[j,i] = 1 / B[i,j]; checked against
  numpy.linalg.eig's principal eigenvector.
- Bradley-Terry: scipy.optimize.minimize (BFGS) of the negative
  log-likelihood with theta[N-1] fixed at 0, then centred (sum-to-zero);
  standard errors from the pseudo-inverse of a finite-difference Hessian of
  the negative log-likelihood (numpy.linalg.pinv).
- Spearman: scipy.stats.spearmanr.
"""
import numpy as np
import scipy.optimize
import scipy.stats


def power_iteration(A, num_simulations, rng):
    # MAD's code, global_ranking.py, but np.random.rand -> a seeded rng.
    b_k = rng.random(A.shape[1])
    for _ in range(num_simulations):
        b_k1 = np.dot(A, b_k)
        b_k1_norm = np.linalg.norm(b_k1)
        b_k = b_k1 / b_k1_norm
    return b_k


def mad_matrix(A, correction=0.5):
    # temp_rank_imgnet, plus gevaldi's rule for a zero count: +0.5 to both.
    n = A.shape[0]
    B = np.full(A.shape, np.nan)
    for i in range(n):
        B[i, i] = 1
        for j in range(i + 1, n):
            a, b = A[i, j], A[j, i]
            if a == 0 or b == 0:
                a, b = a + correction, b + correction
            B[i, j] = a / b
            B[j, i] = 1 / B[i, j]
    return B


def mad(A):
    B = mad_matrix(np.array(A, dtype=float))
    v = power_iteration(B, 100, np.random.default_rng(0))
    w, V = np.linalg.eig(B)
    k = np.argmax(w.real)
    e = np.abs(V[:, k].real)
    e /= np.linalg.norm(e)
    assert np.allclose(v, e, atol=1e-12), (v, e)
    return v, w[k].real


def nll(theta_free, W):
    theta = np.append(theta_free, 0.0)
    d = theta[:, None] - theta[None, :]
    return -np.sum(W * -np.logaddexp(0.0, -d))


def bradley_terry(W):
    W = np.array(W, dtype=float)
    n = W.shape[0]
    r = scipy.optimize.minimize(nll, np.zeros(n - 1), args=(W,), method="BFGS", options={"gtol": 1e-10})
    # Covariance with theta[N-1] = 0 fixed: the inverse of a central
    # finite-difference Hessian over the N-1 free parameters...
    h = 1e-3
    m = n - 1
    H = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            ei, ej = np.eye(m)[i] * h, np.eye(m)[j] * h
            H[i, j] = (nll(r.x + ei + ej, W) - nll(r.x + ei - ej, W) - nll(r.x - ei + ej, W) + nll(r.x - ei - ej, W)) / (4 * h * h)
    cov_ref = np.zeros((n, n))
    cov_ref[:m, :m] = np.linalg.inv(H)
    # ...carried to the centred estimate theta - mean(theta) = M theta.
    M = np.eye(n) - np.ones((n, n)) / n
    theta = M @ np.append(r.x, 0.0)
    cov = M @ cov_ref @ M.T
    return theta, np.sqrt(np.diag(cov))


def smoothed(W, pseudo=0.5):
    W = np.array(W, dtype=float)
    return W + pseudo * (1 - np.eye(W.shape[0]))


cases = {
    "consistent": [[0, 4, 8], [2, 0, 6], [2, 3, 0]],
    "inconsistent": [[0, 6, 8], [4, 0, 5], [2, 3, 0]],
    "always_loses": [[0, 5, 7], [3, 0, 6], [0, 0, 0]],
}
for name, A in cases.items():
    v, lam = mad(A)
    print(f"{name}: power scores {np.array2string(v, precision=15)} eigenvalue {lam:.15f} order {list(np.argsort(-v))}")
    W = smoothed(A) if name == "always_loses" else A
    theta, se = bradley_terry(W)
    print(f"{name}: bt theta {np.array2string(theta, precision=12)} se {np.array2string(se, precision=9)}")

x = [0.98, 0.979, 0.915, 0.9105, 0.9075, 0.917, 0.912]
y = [3.0, 3.0, 1.0, 2.0, 0.5, 1.0, 2.5]
print("spearman ties", repr(scipy.stats.spearmanr(x, y).statistic))
print("spearman ties both", repr(scipy.stats.spearmanr([1, 2, 2, 3, 4], [2, 2, 1, 4, 4]).statistic))
