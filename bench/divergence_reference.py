"""Reference figures for tests/numerics.rs (`divergences_of_f32_logits_match_scipy`).

The logits are f32 (as the search gives them); the reference reads them as
f64 and uses scipy: log_softmax, rel_entr for KL, the mixture for JS
(natural log), half the L1 distance for TV. No floor: where gevaldi's
documented floor (log p >= -1e4) bites, the test says so.
Run: python bench/divergence_reference.py (numpy, scipy).
"""
import numpy as np
from scipy.special import log_softmax, rel_entr

CASES = {
    # name: (logits of model 1, logits of model 2), rows are samples
    "spread": (
        [[1.5, -0.25, 3.0, 0.0, -2.0], [0.1, 0.2, 0.3, 0.4, 0.5], [-4.0, 4.0, 0.0, 1.0, -1.0]],
        [[0.5, 2.25, -1.0, 0.0, 1.0], [0.5, 0.4, 0.3, 0.2, 0.1], [-4.0, 3.5, 0.5, 1.0, -1.5]],
    ),
    "saturated80": (
        [[80.0, -80.0, 0.0, 0.0, 0.0], [80.0, 79.0, -80.0, -80.0, -80.0], [0.0, 0.0, 0.0, 0.0, 80.0]],
        [[-80.0, 80.0, 0.0, 0.0, 0.0], [79.0, 80.0, -80.0, -80.0, -80.0], [0.0, 0.0, 0.0, 0.0, 80.0]],
    ),
    "nearly_equal": (
        [[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0], [10.0, -10.0, 3.0, 0.5, 0.25]],
        [[1.0, 2.0, 3.0, 4.0, 5.0001], [0.0, 1e-4, 0.0, 0.0, 0.0], [10.0, -10.0, 3.0, 0.5, 0.2501]],
    ),
}


def divs(l1, l2):
    a = log_softmax(np.asarray(np.float32(l1), np.float64), axis=1)
    b = log_softmax(np.asarray(np.float32(l2), np.float64), axis=1)
    p, q = np.exp(a), np.exp(b)
    kl = rel_entr(p, q).sum(1)
    rkl = rel_entr(q, p).sum(1)
    m = 0.5 * (p + q)
    js = 0.5 * rel_entr(p, m).sum(1) + 0.5 * rel_entr(q, m).sum(1)
    tv = 0.5 * np.abs(p - q).sum(1)
    return dict(kl=kl, rkl=rkl, jeffreys=kl + rkl, js=js, tv=tv)


for name, (l1, l2) in CASES.items():
    d = divs(l1, l2)
    print(name)
    for k, v in d.items():
        print(f"  {k}: [{', '.join(repr(float(x)) for x in v)}]")
