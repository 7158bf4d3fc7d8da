"""Reference figures for tests/hierarchy.rs (`..._match_an_independent_bfs`).

An independent reading of the ImageNet/WordNet files: every ancestor of each
class by BFS over *all* its hypernyms (the data is a DAG), the shortest path
between two classes through a common ancestor, H = path / 2, and eq. 3's set
distance. Run: python bench/hierarchy_reference.py (numpy only).
"""
import csv
import collections
import random

D = "fixtures/imagenet/"
ids = [r[1] for r in list(csv.reader(open(D + "imagenet1k_classes.tsv"), delimiter="\t"))[1:]]
par = collections.defaultdict(set)
for c, p in list(csv.reader(open(D + "imagenet1k_wordnet_hypernyms.tsv"), delimiter="\t"))[1:]:
    par[c].add(p)


def up(x):
    d = {x: 0}
    q = [x]
    for n in q:
        for p in sorted(par[n]):
            if p not in d:
                d[p] = d[n] + 1
                q.append(p)
    return d


ups = [up(i) for i in ids]


def path(a, b):
    A, B = ups[a], ups[b]
    return min(A[c] + B[c] for c in A.keys() & B.keys())


row_sums = [sum(path(a, b) for b in range(1000)) for a in range(1000)]
print("// Σ_b path(a, b) in edges (= 2 Σ_b H(a, b)), a = 0..1000")
print("const PATH_ROW_SUMS: [u32; 1000] = [" + ", ".join(map(str, row_sums)) + "];")

rng = random.Random(20240607)
cases = []
for n in [1, 2, 3, 5, 5, 10]:
    for _ in range(3):
        c1 = rng.sample(range(1000), n)
        c2 = rng.sample(range(1000), n)
        if _ == 2:  # overlapping sets
            c2 = c1[: n // 2] + c2[n // 2 :]
        d = sum(path(a, b) for a in c1 for b in c2) / 2 / (len(c1) * len(c2))
        cases.append((c1, c2, d))
print("// (C1, C2, d(C1, C2))")
print("const SET_CASES: &[(&[usize], &[usize], f64)] = &[")
for c1, c2, d in cases:
    print(f"    (&{c1}, &{c2}, {d!r}),")
print("];")
