"""Reference for tests/search.rs `a_search_takes_torchs_steps`: the same
linear generator and classifiers, 8 ascent steps in PyTorch f64.
Run with a Python that has torch."""
import math, torch
torch.set_default_dtype(torch.float64)
def mat(r, c, s): return torch.tensor([[math.sin(s + 1.7*i + 0.9*j) for j in range(c)] for i in range(r)])
Wg = mat(6, 3, 0.3)          # x = sigmoid(z Wg^T), z [B,3] -> x [B,6]
A1 = mat(4, 6, 1.1) * 2.0    # logits_m = x A_m^T + b_m, 4 classes
A2 = mat(4, 6, 2.3) * 2.0
b1 = torch.tensor([0.1, -0.2, 0.3, 0.0]); b2 = torch.tensor([-0.3, 0.2, 0.0, 0.1])
z0 = torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.3, -0.7], [-0.2, 0.1, 2.0]])
def div(name, l1, l2):
    a, b = torch.log_softmax(l1, 1), torch.log_softmax(l2, 1)
    p, q = a.exp(), b.exp()
    if name == "kl": return (p * (a - b)).sum(1)
    m = 0.5 * (p + q); lm = m.log()
    return 0.5 * (p * (a - lm)).sum(1) + 0.5 * (q * (b - lm)).sum(1)
def logp(z): return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
for name, optname, lam in [("kl", "adam", 0.3), ("js", "sgd", 0.1)]:
    z = z0.clone().requires_grad_(True)
    opt = (torch.optim.Adam([z], lr=0.05, maximize=True) if optname == "adam"
           else torch.optim.SGD([z], lr=0.5, maximize=True))
    traj = []
    for t in range(8):
        x = torch.sigmoid(z @ Wg.T)
        d = div(name, x @ A1.T + b1, x @ A2.T + b2)
        L = d + lam * logp(z)
        traj.append((L.mean().item(), d.mean().item(), d.max().item()))
        opt.zero_grad(); L.sum().backward(); opt.step()
    with torch.no_grad():
        x = torch.sigmoid(z @ Wg.T); d = div(name, x @ A1.T + b1, x @ A2.T + b2)
        traj.append(((d + lam * logp(z)).mean().item(), d.mean().item(), d.max().item()))
    print(name, optname, lam)
    print("  z", z.detach().tolist())
    print("  d_after", d.tolist())
    print("  traj", traj)
