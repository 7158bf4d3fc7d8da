"""Reference figures for tests/ranking.rs (`five_models_match_*`).

Bradley-Terry by Hunter's (2004) MM iteration, not Newton, centred to
sum 0, standard errors from the pseudo-inverse of the Fisher information;
MAD's power ranking as numpy's principal eigenvector of B (unit norm,
positive); Spearman by scipy.stats.spearmanr. Run: python
bench/ranking_reference.py (numpy, scipy).
"""
import numpy as np
from scipy.stats import spearmanr


def bt_mm(W, pseudo=0.0):
    W = np.asarray(W, float) + pseudo * (1 - np.eye(len(W)))
    n = len(W)
    N = W + W.T
    p = np.ones(n)
    for _ in range(200000):
        new = W.sum(1) / np.array([sum(N[i, j] / (p[i] + p[j]) for j in range(n) if j != i) for i in range(n)])
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(new - p)) < 1e-15:
            p = new
            break
        p = new
    th = np.log(p)
    th -= th.mean()
    P = 1 / (1 + np.exp(-(th[:, None] - th[None, :])))
    I = -N * P * P.T
    np.fill_diagonal(I, 0)
    np.fill_diagonal(I, -I.sum(1))
    C = np.linalg.pinv(I)
    return th, np.sqrt(np.diag(C))


def power(W):
    A = np.asarray(W, float)
    n = len(A)
    B = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a, b = A[i, j], A[j, i]
            if a == 0 or b == 0:
                a, b = a + 0.5, b + 0.5
            B[i, j] = a / b
            B[j, i] = b / a
    vals, vecs = np.linalg.eig(B)
    k = np.argmax(vals.real)
    v = np.abs(vecs[:, k].real)
    return v / np.linalg.norm(v), vals[k].real


W1 = [[0, 7, 3, 9, 4], [5, 0, 6, 2, 8], [6, 4, 0, 5, 1], [1, 7, 3, 0, 6], [2, 3, 8, 4, 0]]
W2 = [[0, 4, 0, 2, 5], [3, 0, 6, 0, 1], [0, 0, 0, 3, 2], [0, 0, 0, 0, 0], [1, 2, 4, 7, 0]]  # 3 never wins
for name, W, pseudo in [("W1", W1, 0.0), ("W2", W2, 0.5)]:
    th, se = bt_mm(W, pseudo)
    s, lam = power(W)
    print(name, "theta", list(map(float, th)))
    print(name, "se", list(map(float, se)))
    print(name, "power", list(map(float, s)), float(lam))

X = [0.91, 0.88, 0.88, 0.75, 0.91, 0.60, 0.88, 0.70]
Y = [3.0, 1.0, 2.0, 2.0, 5.0, -1.0, 2.0, 0.0]
print("spearman", float(spearmanr(X, Y).statistic))
print("spearman neg", float(spearmanr(X, [-y for y in Y]).statistic))
print("spearman 2", float(spearmanr([1.0, 2.0], [5.0, 3.0]).statistic))
