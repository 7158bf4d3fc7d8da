"""Reference for src/ensemble.rs `metrics_match_scikit_learn`: 40 samples,
4 classes, probabilities on a coarse grid (many tied scores), scikit-learn's
accuracy_score, roc_auc_score(multi_class="ovr", average="macro") and
f1_score(average="macro"). Run: python bench/metrics_reference.py."""
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

rng = np.random.default_rng(11)
raw = rng.integers(0, 5, size=(40, 4)).astype(float) + 0.5
probs = (raw / raw.sum(1, keepdims=True)).astype(np.float32)
labels = rng.integers(0, 4, size=40)
# The first 10 samples lean towards their label, so accuracy is not chance.
for i in range(10):
    probs[i] = np.float32(0.1)
    probs[i, labels[i]] = np.float32(0.7)
p64 = probs.astype(np.float64)
print("probs", [list(map(float, r)) for r in probs])
print("labels", list(map(int, labels)))
print("accuracy", accuracy_score(labels, p64.argmax(1)))
print("auc", roc_auc_score(labels, p64, multi_class="ovr", average="macro"))
print("f1", f1_score(labels, p64.argmax(1), average="macro"))
