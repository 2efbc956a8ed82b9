"""The peer randbench-tch is compared with: the same work as a plain PyTorch eager loop.

    python pytorch_eager.py step [--steps N] [--threads T] [--device cuda]
        One training step of the 784-512-10 MLP (batch 128, SGD momentum 0.9, lr 0.01) on a
        fixed batch, timed step by step after warm-up. Every 50 steps the weights start
        again from their initial values (untimed), as in randbench's own step benchmark.
    python pytorch_eager.py randomization [--threads T] [--max-epochs E] [--device cuda]
        The randomization suite (bench-suites/randomization.yaml): Fashion-MNIST, 5,000
        training images standardized with the training set's mean and deviation, the five
        conditions, trained until 100% training accuracy; steps timed as randbench times them.

Prints one JSON object on stdout.
"""
import argparse
import gzip
import struct
import time

import torch

from common import add_machine_options, machine, report

FASHION = "/usr/share/datasets/fashion-mnist"


def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return torch.frombuffer(bytearray(b[4 + 4 * nd:]), dtype=torch.uint8).reshape(dims)


def mlp(device):
    return torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_benchmark(steps, device):
    torch.manual_seed(0)
    x = torch.rand(128, 784).to(device)
    y = torch.randint(0, 10, (128,)).to(device)
    model = mlp(device)
    initial = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def reset():
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), initial):
                p.copy_(p0)
        opt.state.clear()

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    times = []
    while len(times) < steps:
        reset()
        sync(device)
        for _ in range(50):
            t = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    times.sort()
    return {"median_step_seconds": times[len(times) // 2], "mean_step_seconds": mean, "steps": len(times)}


def randomization(max_epochs, device):
    xs = idx(f"{FASHION}/train-images-idx3-ubyte.gz").float().div(255).reshape(-1, 784)
    ys = idx(f"{FASHION}/train-labels-idx1-ubyte.gz").long()
    xt = idx(f"{FASHION}/t10k-images-idx3-ubyte.gz").float().div(255).reshape(-1, 784)
    yt = idx(f"{FASHION}/t10k-labels-idx1-ubyte.gz").long()
    mean, std = xs.mean(), xs.std(unbiased=False)
    xs, xt = (xs - mean) / std, (xt - mean) / std
    xs, ys = xs[:5000].clone(), ys[:5000].clone()
    xt, yt = xt.to(device), yt.to(device)
    out = {}
    for cond in ["true_labels", "random_labels", "shuffled_pixels", "random_pixels", "gaussian"]:
        g = torch.Generator().manual_seed(0)
        x, y, tx = xs.clone(), ys.clone(), xt.clone()
        if cond == "random_labels":
            y = torch.randint(0, 10, (5000,), generator=g)
        elif cond == "shuffled_pixels":
            perm = torch.randperm(784, generator=g)
            x, tx = x[:, perm], tx[:, perm]
        elif cond == "random_pixels":
            x = torch.stack([r[torch.randperm(784, generator=g)] for r in x])
            tx = torch.stack([r[torch.randperm(784, generator=g)] for r in tx])
        elif cond == "gaussian":
            m, s = x.mean(), x.std(unbiased=False)
            x = m + s * torch.randn(x.shape, generator=g)
            tx = m + s * torch.randn(tx.shape, generator=g)
        x, y, tx = x.to(device), y.to(device), tx.to(device)
        # Warm-up as randbench does it: WARMUP_STEPS (5) steps on a throwaway model and
        # optimizer before the clock, so first-run costs stay out of the timed steps.
        warm = mlp(device)
        warm_opt = torch.optim.SGD(warm.parameters(), lr=0.01, momentum=0.9)
        for _ in range(5):
            b = torch.randint(0, 5000, (128,)).to(device)
            loss = torch.nn.functional.cross_entropy(warm(x[b]), y[b])
            warm_opt.zero_grad(set_to_none=True)
            loss.backward()
            warm_opt.step()
        sync(device)
        torch.manual_seed(0)
        model = mlp(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        train_seconds, steps, fit = 0.0, 0, None
        for epoch in range(1, max_epochs + 1):
            order = torch.randperm(5000, generator=g).to(device)
            for i in range(0, 5000, 128):
                b = order[i:i + 128]
                t = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sync(device)
                train_seconds += time.perf_counter() - t
                steps += 1
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            if acc >= 1.0:
                fit = epoch
                break
        with torch.no_grad():
            test = (model(tx).argmax(1) == yt).float().mean().item()
        out[cond] = {"epochs_to_fit": fit, "train_seconds": train_seconds, "steps": steps, "test_accuracy": test}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["step", "randomization"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--max-epochs", type=int, default=400)
    add_machine_options(ap)
    a = ap.parse_args()
    device = machine(a)
    result = step_benchmark(a.steps, device) if a.mode == "step" else randomization(a.max_epochs, device)
    report(result, device)


if __name__ == "__main__":
    main()
