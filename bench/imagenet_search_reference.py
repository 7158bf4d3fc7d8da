#!/usr/bin/env python3
"""A whole ImageNet search as a user runs it (config -> suite -> trial ->
search -> record and snapshot), reproduced independently in PyTorch.

    python bench/imagenet_search_reference.py [--dir DIR] [--threads N]

Run from the repository root with a Python that has torch, torchvision,
pytorch-pretrained-biggan and safetensors (bench/setup_torch.sh). It

1. makes seeded random weights of the real sizes (bench/imagenet_reference.py's
   models; BigGAN-deep-128's 51 rows of batch-norm statistics scaled from 0.8
   to 1.2 so that interpolating them at a truncation matters), once, in
   DIR (default target/imagenet-search-check, about 600 MB);
2. builds DIR/zgen, a few lines of Rust on rand_chacha and rand_distr (the
   versions of Cargo.lock) that draw what a pair draws: z0 (the search's
   seed), the baseline's z (its stream 1) and one class per sample (the
   seed ^ "clas");
3. writes DIR/suite/gevaldi.toml, trials that vary what the paper's does
   not: truncations 0.4, 0.73, 0.99 and 1.0, GoogLeNet (transform_input
   either way), AlexNet, the SqueezeNets, ResNet-18 and -50, ConvNeXt-T,
   non-square resizes, one mean/std for every channel, BGR, no resize, KL,
   reverse KL, Jeffreys, JS (of two and three models), TV, Adam and SGD,
   λ = 0, top_n 2, 4, 7 and 10, a max_set_distance;
4. runs it with `cargo run --release -p cargo-gevaldi -- run` (snapshots
   written anew, INSTA_UPDATE=always) and reads each record and snapshot;
5. runs each search again in PyTorch f32 from the record's z0 and classes:
   the port's BigGAN, torchvision's classifiers, the config's preprocessing
   with F.interpolate (bilinear, align_corners=False, no antialias), the
   divergence on log_softmax, log p(z) of the truncated normal, torch.optim
   Adam or SGD with maximize=True, and the WordNet set distances of the
   top-n sets by a BFS of its own over every hypernym.

It fails (exit 1) on what f32 rounding cannot explain: z0 or the classes
not those the seed draws; at z0, a divergence, objective, log-probability or
baseline divergence off by more than 1e-3 relative (1e-5 absolute); the
first step moving z by another distance (dz, 1e-2 relative: Adam's first
step is lr·sign(g), so a coordinate whose gradient is within rounding of 0
may go the other way); a set distance that is not the BFS's on the
record's own log-probabilities; a snapshot or summary figure that is not
the record's. Later steps are printed, not checked: the ascent is chaotic,
and gevaldi's and PyTorch's f32 gradients differ from float64's by a few
per cent on these random weights (max-pool windows with near-ties,
saturated tanh; README, "The paper's ImageNet models (CPU)").
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import deque

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagenet_reference as ir  # noqa: E402

FLOOR = -1e4  # gevaldi::divergence::LOG_PROB_FLOOR
MASS = 0.9544997361036416  # P(|u| <= 2), u standard normal
CLASSIFIERS = ["googlenet", "alexnet", "squeezenet1_0", "squeezenet1_1", "resnet18", "resnet50", "convnext_tiny"]
IMAGENET = 'mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]'

ZGEN_TOML = """[package]
name = "zgen"
version = "0.1.0"
edition = "2021"
[dependencies]
rand = { version = "0.9", default-features = false, features = ["std"] }
rand_chacha = { version = "0.9", default-features = false, features = ["std"] }
rand_distr = { version = "0.5", default-features = false, features = ["std"] }
[workspace]
"""

ZGEN_RS = """use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
// zgen z SEED STREAM N D T: N*D draws of t*u, u ~ N(0, 1) cut at +-2 (BigGan::sample_prior)
// zgen classes SEED N K: a pair's classes (src/suite/pair.rs)
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let seed: u64 = a[2].parse().unwrap();
    let out: Vec<String> = if a[1] == "classes" {
        let (n, k): (usize, usize) = (a[3].parse().unwrap(), a[4].parse().unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x636c_6173);
        (0..n).map(|_| rng.random_range(0..k).to_string()).collect()
    } else {
        let stream: u64 = a[3].parse().unwrap();
        let (n, d): (usize, usize) = (a[4].parse().unwrap(), a[5].parse().unwrap());
        let t = a[6].parse::<f64>().unwrap() as f32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if stream != 0 {
            rng.set_stream(stream);
        }
        (0..n * d)
            .map(|_| loop {
                let u: f32 = StandardNormal.sample(&mut rng);
                if u.abs() <= 2.0 {
                    break format!("{:e}", t * u);
                }
            })
            .collect()
    };
    println!("[{}]", out.join(","));
}
"""


def suite_toml(d):
    w = os.path.abspath(os.path.join(d, "weights"))
    h = os.path.abspath("fixtures/imagenet")
    gens = "".join(
        f'[generator.{name}]\narch = "biggan-deep-128"\n'
        f'weights = "{w}/biggan-deep-128.safetensors"\ntruncation = {t}\n\n'
        for name, t in [("big04", 0.4), ("big073", 0.73), ("big099", 0.99), ("big1", 1.0)]
    )
    clf = {
        "googlenet": ("googlenet", f"input_range = [-1, 1], resize = 224, {IMAGENET}", ""),
        "alexnet": ("alexnet", f"input_range = [-1, 1], resize = 224, {IMAGENET}", ""),
        "gnf": ("googlenet", f"input_range = [-1, 1], resize = [150, 170], {IMAGENET}", "transform_input = false\n"),
        "sq0": ("squeezenet1_0", f"input_range = [-1, 1], resize = [200, 256], {IMAGENET}", ""),
        "sq1": ("squeezenet1_1", "input_range = [-1, 1], resize = 160, mean = [0.5], std = [0.25]", ""),
        "r18": ("resnet18", 'input_range = [-1, 1], resize = [224, 192], channels = "bgr", '
                            "mean = [0.406, 0.456, 0.485], std = [0.225, 0.224, 0.229]", ""),
        "r50": ("resnet50", "input_range = [-1, 1]", ""),
        "cnx": ("convnext_tiny", f"input_range = [-1, 1], resize = 224, {IMAGENET}", ""),
        "alex100": ("alexnet", "input_range = [-1.5, 1.5], resize = 100", ""),
    }
    clfs = "".join(
        f'[classifier.{n}]\narch = "{a}"\nweights = "{w}/{a}.safetensors"\n{extra}preprocess = {{ {p} }}\n\n'
        for n, (a, p, extra) in clf.items()
    )
    pairs = [
        # the paper's (figures 1 and 4), at batch 2 and 4 steps
        ("googlenet-vs-alexnet", ["googlenet", "alexnet"], "big04", "top_n = 5\nsteps = 4\n"),
        ("sq-js", ["sq0", "sq1"], "big073", 'divergence = "js"\ntop_n = 2\nmax_set_distance = 6.0\n'),
        ("r18-cnx-jeffreys", ["r18", "cnx"], "big099",
         'divergence = "jeffreys"\noptimizer = "sgd"\nlr = 0.5\ntop_n = 7\n'),
        ("r50-alex-tv", ["r50", "alex100"], "big1", 'divergence = "tv"\nlambda = 0.1\ntop_n = 10\n'),
        ("sq1-r18-rkl", ["sq1", "r18"], "big073", 'divergence = "reverse-kl"\nlambda = 0.0\ntop_n = 4\n'),
        ("three-js", ["sq0", "sq1", "r18"], "big073", 'divergence = "js"\ntop_n = 3\nseed = 3\n'),
        ("gnf-sq1-sgd", ["gnf", "sq1"], "big04", 'optimizer = "sgd"\nlr = 0.01\nseed = 11\n'),
    ]
    pair_text = "".join(
        f'[[pair]]\nname = "{n}"\nmodels = {json.dumps(m)}\ngenerator = "{g}"\n{extra}\n' for n, m, g, extra in pairs
    )
    return f"""# Written by bench/imagenet_search_reference.py.
[search]
divergence = "kl"
optimizer = "adam"
lr = 0.05
lambda = 0.01
batch = 2
steps = 3
seed = 7

[hierarchy]
classes = "{h}/imagenet1k_classes.tsv"
edges = "{h}/imagenet1k_wordnet_hypernyms.tsv"
names = "{h}/imagenet1k_wordnet_names.tsv"

{gens}{clfs}{pair_text}"""


def make_weights(d):
    wd = os.path.join(d, "weights")
    if os.path.exists(os.path.join(wd, "complete")):
        return
    os.makedirs(wd, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 224, 224, generator=g)
    for name in CLASSIFIERS:
        m = ir.classifier(name)
        ir.calibrate_batch_norms(m, x)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(wd, f"{name}.safetensors"))
        print(f"made {name}", file=sys.stderr)
    m = ir.biggan()
    z = torch.randn(8, 128, generator=g).clamp(-2, 2) * 0.5
    c = F.one_hot(torch.randint(0, 1000, (8,), generator=g), 1000).float()
    ir.calibrate_biggan(m, z, c)
    with torch.no_grad():
        for mod in m.modules():
            if type(mod).__name__ == "BigGANBatchNorm":
                k = torch.linspace(0.8, 1.2, mod.running_means.shape[0])[:, None]
                mod.running_means.mul_(k)
                mod.running_vars.mul_(k * k)
    save_file(ir.biggan_state_dict(m), os.path.join(wd, "biggan-deep-128.safetensors"))
    print("made biggan-deep-128", file=sys.stderr)
    open(os.path.join(wd, "complete"), "w").close()


def build_zgen(d):
    zd = os.path.join(d, "zgen")
    os.makedirs(os.path.join(zd, "src"), exist_ok=True)
    open(os.path.join(zd, "Cargo.toml"), "w").write(ZGEN_TOML)
    open(os.path.join(zd, "src", "main.rs"), "w").write(ZGEN_RS)
    shutil.copy("Cargo.lock", os.path.join(zd, "Cargo.lock"))
    subprocess.run(["cargo", "build", "--release", "--offline", "-q"], cwd=zd, check=True)
    return os.path.join(zd, "target", "release", "zgen")


def load_classifier(arch, path, table):
    import torchvision.models as tvm

    sd = load_file(path)
    if arch == "googlenet":
        m = tvm.googlenet(weights=None, init_weights=False, aux_logits=any(k.startswith("aux") for k in sd),
                          transform_input=table.get("transform_input", True))
    else:
        m = getattr(tvm, arch)(weights=None)
    m.load_state_dict(sd)
    return m.eval().requires_grad_(False)


def load_biggan(path):
    BigGAN, BigGANConfig = ir.biggan_classes()
    m = BigGAN(BigGANConfig())
    m.load_state_dict(load_file(path))
    return m.eval().requires_grad_(False)


def preprocess(x, p):
    lo, hi = p.get("input_range", [0.0, 1.0])
    x = (x - lo) / (hi - lo)
    if "resize" in p:
        r = p["resize"]
        size = (r, r) if isinstance(r, int) else tuple(r)
        if tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    ch = p.get("channels", "rgb")
    if ch == "bgr":
        x = x.flip(1)
    elif ch == "grey-to-rgb":
        x = x.repeat(1, 3, 1, 1)
    if "mean" in p:
        c = x.shape[1]
        mean = torch.tensor(p["mean"], dtype=x.dtype).expand(c).reshape(1, c, 1, 1)
        std = torch.tensor(p["std"], dtype=x.dtype).expand(c).reshape(1, c, 1, 1)
        x = (x - mean) / std
    return x


def divergence(name, logits):
    lps = [F.log_softmax(l, dim=1).clamp(min=FLOOR) for l in logits]
    ps = [lp.exp() for lp in lps]
    if name == "kl":
        return (ps[0] * (lps[0] - lps[1])).sum(1), lps
    if name == "reverse-kl":
        return (ps[1] * (lps[1] - lps[0])).sum(1), lps
    if name == "jeffreys":
        return ((ps[0] - ps[1]) * (lps[0] - lps[1])).sum(1), lps
    if name == "tv":
        return 0.5 * (ps[0] - ps[1]).abs().sum(1), lps
    if name == "js":
        def entropy(p):
            return -(p * torch.log(p.clamp(min=1e-300))).sum(1)
        return entropy(sum(ps) / len(ps)) - sum(entropy(p) for p in ps) / len(ps), lps
    raise SystemExit(f"unknown divergence {name}")


def log_prior(z, t):
    """The truncated normal's log-density (z = t·u, u cut at ±2), without the box."""
    return -0.5 * ((z / t) ** 2).sum(1) - z.shape[1] * (0.5 * math.log(2 * math.pi) + math.log(t) + math.log(MASS))


class Wordnet:
    """H(a, b) = half the shortest path through a common ancestor, by BFS
    over every hypernym of each class (WordNet is a DAG)."""

    def __init__(self, classes, edges):
        self.wnids = [r.rstrip("\n").split("\t")[1] for r in list(open(classes))[1:]]
        parents = {}
        for line in list(open(edges))[1:]:
            c, p = line.rstrip("\n").split("\t")
            parents.setdefault(c, []).append(p)
        self.up = []
        for w in self.wnids:
            dist, q = {w: 0}, deque([w])
            while q:
                u = q.popleft()
                for p in parents.get(u, []):
                    if p not in dist:
                        dist[p] = dist[u] + 1
                        q.append(p)
            self.up.append(dist)
        self.cache = {}

    def h(self, a, b):
        key = (min(a, b), max(a, b))
        if key not in self.cache:
            da, db = self.up[a], self.up[b]
            self.cache[key] = 0.0 if a == b else min(da[c] + db[c] for c in da if c in db) / 2.0
        return self.cache[key]

    def models_distance(self, rows, n):
        """The mean of eq. 3's d over all pairs of models' top-n sets."""
        tops = [torch.argsort(torch.as_tensor(r), descending=True, stable=True)[:n].tolist() for r in rows]
        ds = [
            sum(self.h(a, b) for a in tops[i] for b in tops[j]) / (n * n)
            for i in range(len(tops)) for j in range(i + 1, len(tops))
        ]
        return sum(ds) / len(ds)


def stats(v):
    v = sorted(v)
    pos = 0.5 * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return dict(mean=sum(v) / len(v), median=v[lo] + (v[hi] - v[lo]) * (pos - lo), max=v[-1])


class Checks:
    def __init__(self):
        self.failed = []

    def close(self, what, got, want, rel=1e-3, abs_=1e-5):
        err = abs(got - want)
        ok = err <= abs_ or err <= rel * abs(want)
        if not ok:
            self.failed.append(f"{what}: gevaldi {got!r}, PyTorch {want!r}")
        return err / max(abs(want), 1e-30)

    def equal(self, what, got, want, tol=1e-9):
        if len(got) != len(want):
            self.failed.append(f"{what}: gevaldi has {len(got)} values, expected {len(want)}")
            return
        bad = [i for i, (a, b) in enumerate(zip(got, want)) if not abs(a - b) <= tol * max(1.0, abs(b))]
        if len(bad) > 8:
            err = max(abs(got[i] - want[i]) for i in bad)
            self.failed.append(f"{what}: {len(bad)} of {len(got)} values differ, by up to {err:.3g}")
        elif bad:
            self.failed.append(f"{what}: gevaldi {got}, expected {want}")


def check_pair(cfg, pair, rec, snap, zgen, wn, checks):
    name = pair["name"]
    s = dict(cfg["search"])
    s.update({k: v for k, v in pair.items() if k in ("divergence", "optimizer", "lr", "lambda", "steps", "seed")})
    t = cfg["generator"][pair["generator"]]["truncation"]
    gen = load_biggan(cfg["generator"][pair["generator"]]["weights"])
    clf = []
    for m in pair["models"]:
        tab = cfg["classifier"][m]
        clf.append((load_classifier(tab["arch"], tab["weights"], tab), tab.get("preprocess", {})))
    samples, B = rec["samples"], len(rec["samples"])
    seed = s["seed"]
    draw = lambda *a: json.loads(subprocess.check_output([zgen, *map(str, a)]))  # noqa: E731
    z0 = torch.tensor([sm["z0"] for sm in samples])
    failed = len(checks.failed)
    checks.equal(f"{name}: z0", z0.flatten().tolist(), draw("z", seed, 0, B, 128, repr(t)), tol=1e-7)
    checks.equal(f"{name}: classes", rec["conditions"], draw("classes", seed, B, 1000), tol=0)
    drawn = "as drawn" if len(checks.failed) == failed else "NOT as drawn"
    zb = torch.tensor(draw("z", seed, 1, B, 128, repr(t))).reshape(B, 128)
    c = F.one_hot(torch.tensor(rec["conditions"]), 1000).float()

    def evaluate(z):
        img = gen(z, c, t)
        return divergence(s["divergence"], [m(preprocess(img, p)) for m, p in clf])

    z = z0.clone().requires_grad_(True)
    opt = (torch.optim.Adam([z], lr=s["lr"], maximize=True) if s["optimizer"] == "adam"
           else torch.optim.SGD([z], lr=s["lr"], maximize=True))
    traj, first, last = [], None, None
    for step in range(s["steps"] + 1):
        d, lps = evaluate(z)
        obj = d + s["lambda"] * log_prior(z, t)
        with torch.no_grad():
            dz = ((z - z0).norm(dim=1) / z.norm(dim=1)).tolist()
        traj.append(dict(d=d.mean().item(), obj=obj.mean().item(), dz=sum(dz) / B))
        held = (d.detach().clone(), [lp.detach().clone() for lp in lps], dz)
        first = first or held
        if step == s["steps"]:
            last = held
            break
        opt.zero_grad()
        obj.sum().backward()
        opt.step()
    with torch.no_grad():
        db, _ = evaluate(zb)

    # At z0: the forward pass and the baseline, to f32 rounding.
    g0 = rec["trajectory"][0]
    checks.close(f"{name}: mean divergence at z0", g0["mean_divergence"], traj[0]["d"])
    checks.close(f"{name}: mean objective at z0", g0["mean_objective"], traj[0]["obj"])
    for i, sm in enumerate(samples):
        checks.close(f"{name}: sample {i}'s divergence at z0", sm["divergence_before"], first[0][i].item())
        for m, lp in enumerate(sm["log_probs_before"]):
            err = (torch.tensor(lp) - first[1][m][i]).abs().max().item()
            if not err <= 5e-3:  # a NaN fails
                checks.failed.append(f"{name}: sample {i}, model {m}: log-probabilities at z0 off by {err:.2g}")
        checks.close(f"{name}: sample {i}'s baseline divergence", rec["baseline"]["divergences"][i], db[i].item())
    if len(traj) > 1:
        checks.close(f"{name}: mean dz after the first step", rec["trajectory"][1]["mean_dz"], traj[1]["dz"], rel=1e-2)

    # Set distances: the record's, against the BFS on the record's own log-probs.
    ns = [int(re.search(r"top-(\d+)", m).group(1)) for m in rec["measure_names"]]
    for i, sm in enumerate(samples):
        for when in ("before", "after"):
            want = [wn.models_distance(sm[f"log_probs_{when}"], n) for n in ns]
            checks.equal(f"{name}: sample {i}'s set distances {when}", sm[f"measures_{when}"], want)
    for k, step in ((0, "before"), (-1, "after")):
        want = [sum(sm[f"measures_{step}"][j] for sm in samples) / B for j in range(len(ns))]
        checks.equal(f"{name}: trajectory's set distances {step}", rec["trajectory"][k]["mean_measures"], want)

    # The summary (the snapshot's figures, unrounded), from the record's samples.
    S = rec["summary"]
    top_n = S["set_distance"]["top_n"]
    j = ns.index(top_n)
    before = [sm["divergence_before"] for sm in samples]
    after = [sm["divergence_after"] for sm in samples]
    for key, want in [("before", stats(before)), ("after", stats(after))]:
        checks.equal(f"{name}: summary's divergence {key}", list(S["divergence"][key].values()), list(want.values()))
    base = stats(rec["baseline"]["divergences"])
    checks.equal(f"{name}: summary's baseline", list(S["baseline"].values()), list(base.values()))
    checks.equal(f"{name}: summary's lift", [S["lift"]], [stats(after)["mean"] / base["mean"]])
    checks.equal(f"{name}: summary's dz", [S["mean_dz"]], [sum(sm["dz"] for sm in samples) / B])
    argmax = lambda lp: max(range(len(lp)), key=lp.__getitem__)  # noqa: E731
    disagree = sum(len({argmax(lp) for lp in sm["log_probs_after"]}) > 1 for sm in samples) / B
    checks.equal(f"{name}: summary's disagreement", [S["disagreement"]], [disagree])
    for key in ("before", "after"):
        want = stats([sm[f"measures_{key}"][j] for sm in samples])
        got = list(S["set_distance"][key].values())
        checks.equal(f"{name}: summary's set distance {key}", got, list(want.values()))
    # The snapshot's start lines, against PyTorch's figures.
    line = re.search(r"^start\.divergence: \S+ mean (\S+), median (\S+), max (\S+)$", snap, re.M)
    for got, want in zip(map(float, line.groups()), stats(first[0].tolist()).values()):
        checks.close(f"{name}: snapshot's start.divergence", got, want)
    line = re.search(r"^start\.baseline: \S+ mean (\S+), median (\S+), max (\S+)$", snap, re.M)
    for got, want in zip(map(float, line.groups()), stats(db.tolist()).values()):
        checks.close(f"{name}: snapshot's start.baseline", got, want)

    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)  # noqa: E731
    zf = torch.tensor([sm["z"] for sm in samples])
    print(f"{name}: z0 and classes {drawn}; at z0 divergence {rel(g0['mean_divergence'], traj[0]['d']):.1e}, "
          f"baseline {max(rel(a, b) for a, b in zip(rec['baseline']['divergences'], db.tolist())):.1e} "
          f"relative; mean divergence by step (relative): "
          + " ".join(f"{rel(g['mean_divergence'], r['d']):.1e}" for g, r in zip(rec["trajectory"], traj))
          + f"; dz after step 1 {rel(rec['trajectory'][1]['mean_dz'], traj[1]['dz']):.1e}; "
          f"final z max |diff| {(zf - z.detach()).abs().max().item():.2g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="target/imagenet-search-check")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    make_weights(a.dir)
    zgen = build_zgen(a.dir)
    suite = os.path.abspath(os.path.join(a.dir, "suite"))
    shutil.rmtree(os.path.join(suite, "snapshots"), ignore_errors=True)
    os.makedirs(suite, exist_ok=True)
    config = os.path.join(suite, "gevaldi.toml")
    open(config, "w").write(suite_toml(a.dir))
    run = subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "cargo-gevaldi", "--", "run", config],
        env={**os.environ, "INSTA_UPDATE": "always"}, capture_output=True, text=True,
    )
    out = run.stdout + run.stderr
    print(out, file=sys.stderr)
    records = re.search(r"records under (\S+)", out)
    if not records:
        sys.exit("cargo gevaldi run wrote no records")
    cfg = tomllib.load(open(config, "rb"))
    wn = Wordnet(cfg["hierarchy"]["classes"], cfg["hierarchy"]["edges"])
    checks = Checks()
    for pair in cfg["pair"]:
        rec = json.load(open(os.path.join(records.group(1), f"{pair['name']}.json")))
        rec = rec.get("Pair", rec)
        snap = open(os.path.join(suite, "snapshots", "gevaldi", f"pair-{pair['name']}.snap")).read()
        check_pair(cfg, pair, rec, snap, zgen, wn, checks)
    if checks.failed:
        print("\n!!! gevaldi's search differs from PyTorch's beyond f32 rounding:", *checks.failed, sep="\n  ")
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
