"""Reference for src/preprocess.rs `imagenet_preprocessing_matches_torch`:
x[c][i][j] = sin(0.3 c + 0.7 i + 1.1 j) in [-1, 1], mapped to [0, 1],
F.interpolate(mode="bilinear", align_corners=False) (upsampling 5x7 -> 9x4
rows and columns both ways, and 8x8 -> 224x224), then ImageNet's
mean/std. Run with a Python that has torch."""
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def x(h, w):
    c, i, j = torch.meshgrid(torch.arange(3.0), torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    return torch.sin(0.3 * c + 0.7 * i + 1.1 * j).unsqueeze(0).float().double()


def pre(t, size):
    t = (t + 1) / 2
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return (t - mean) / std


small = pre(x(5, 7), (9, 4))
print("small", small.flatten().tolist())
big = pre(x(8, 8), (224, 224))
print("big sum", big.sum().item(), "sumsq", (big ** 2).sum().item())
print("big probes", [big[0, c, i, j].item() for c, i, j in [(0, 0, 0), (1, 100, 37), (2, 223, 223), (0, 13, 200)]])
