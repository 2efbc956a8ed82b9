"""The peer of randbench's learned-optimizer workload: the same meta-training as a plain
PyTorch eager loop (Andrychowicz et al., 2016; the configuration of bench-suites/l2l-quadratic.yaml).

    python pytorch_l2l.py unroll [--unrolls N] [--threads T] [--device cuda]
        Meta-training unrolls on 128 quadratics of dimension 10 (W, y uniform, θ₀ ~ N(0, 0.01²)):
        a 2×20 LSTM optimizer (torch.nn.LSTMCell), log-sign preprocessing (p = 10), output
        × 0.01, 20 steps, the optimizee's gradient detached, the meta-loss Σ f(θ_t) over
        t = 1..20, backward and one Adam step (lr 1e-3). A new problem every 5 unrolls (a
        horizon of 100). Each unroll is timed after 2 warm-up unrolls; prints the median.
    python pytorch_l2l.py train [--epochs E] [--threads T]
        Meta-trains for E problems, then reports the mean loss at step 100 on 100 held-out
        problems, next to tuned Adam's (lr 0.3).

Prints one JSON object on stdout.
"""
import argparse
import time

import torch

from common import add_machine_options, machine, report

B, D, HIDDEN, P, SCALE, UNROLL, HORIZON = 128, 10, 20, 10.0, 0.01, 20, 100


class Optimizer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.LSTMCell(2, HIDDEN)
        self.l2 = torch.nn.LSTMCell(HIDDEN, HIDDEN)
        self.out = torch.nn.Linear(HIDDEN, 1)

    def forward(self, grad, state):
        g = grad.reshape(-1, 1)
        big = (g.abs() >= torch.exp(torch.tensor(-P))).float()
        f1 = big * torch.log(g.abs().clamp(min=float(torch.exp(torch.tensor(-P))))) / P - (1 - big)
        f2 = big * torch.sign(g) + (1 - big) * torch.exp(torch.tensor(P)) * g
        x = torch.cat([f1, f2], 1)
        h1, c1 = self.l1(x, (state[0], state[1]))
        h2, c2 = self.l2(h1, (state[2], state[3]))
        return SCALE * self.out(h2).reshape(grad.shape), [h1, c1, h2, c2]


def problem(gen, device):
    w = torch.rand(B, D, D, generator=gen).to(device)
    y = torch.rand(B, D, generator=gen).to(device)
    theta = (0.01 * torch.randn(B, D, generator=gen)).to(device)
    return w, y, theta


def loss(w, y, theta):
    return ((torch.einsum("bij,bj->bi", w, theta) - y) ** 2).sum(1).mean()


def zero_state(device):
    return [torch.zeros(B * D, HIDDEN, device=device) for _ in range(4)]


def unroll(net, w, y, theta, state, train):
    theta = theta.detach().requires_grad_(True)
    state = [s.detach() for s in state]
    total = 0.0
    f = loss(w, y, theta)
    for _ in range(UNROLL):
        grad = torch.autograd.grad(f, theta, retain_graph=train)[0].detach()
        update, state = net(grad, state)
        theta = theta + update
        f = loss(w, y, theta)
        total = total + f
    return total, theta, state, f


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unroll_benchmark(unrolls, device):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = Optimizer().to(device)
    meta = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    k = 0
    while len(times) < unrolls:
        w, y, theta = problem(gen, device)
        state = zero_state(device)
        for _ in range(HORIZON // UNROLL):
            t = time.perf_counter()
            total, theta, state, _ = unroll(net, w, y, theta, state, True)
            meta.zero_grad(set_to_none=True)
            total.backward()
            meta.step()
            sync(device)
            dt = time.perf_counter() - t
            k += 1
            if k > 2:
                times.append(dt)
    times.sort()
    return {"median_unroll_seconds": times[len(times) // 2], "unrolls": len(times)}


def evaluate(step_fn, problems):
    finals = []
    for w, y, theta in problems:
        finals.append(step_fn(w, y, theta))
    return sum(finals) / len(finals)


def train(epochs, device):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = Optimizer().to(device)
    meta = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        w, y, theta = problem(gen, device)
        state = zero_state(device)
        for _ in range(HORIZON // UNROLL):
            total, theta, state, _ = unroll(net, w, y, theta, state, True)
            meta.zero_grad(set_to_none=True)
            total.backward()
            meta.step()
    seconds = time.perf_counter() - start
    held = [problem(gen, device) for _ in range(100)]

    def learned(w, y, theta):
        state = zero_state(device)
        for _ in range(HORIZON // UNROLL):
            _, theta, state, f = unroll(net, w, y, theta, state, False)
        return f.item()

    def adam(w, y, theta):
        theta = theta.clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=0.3)
        for _ in range(HORIZON):
            opt.zero_grad()
            loss(w, y, theta).backward()
            opt.step()
        return loss(w, y, theta).item()

    return {"epochs": epochs, "meta_seconds": seconds, "learned": evaluate(learned, held), "adam": evaluate(adam, held)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["unroll", "train"])
    ap.add_argument("--unrolls", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=1000)
    add_machine_options(ap)
    a = ap.parse_args()
    device = machine(a)
    result = unroll_benchmark(a.unrolls, device) if a.mode == "unroll" else train(a.epochs, device)
    report(result, device)


if __name__ == "__main__":
    main()
