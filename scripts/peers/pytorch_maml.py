"""The peer of randbench's few-shot workload: one meta-training step of MAML (Finn et al.,
2017) or of Ravi & Larochelle's meta-learner LSTM (2017) as a plain PyTorch eager loop, the
computation of randbench's `meta_step_graph(learner, shape, tasks, inner, Outer::Adam { lr })`.

    python pytorch_maml.py [--method maml|meta-learner] [--order first|second]
                           [--way N] [--shot K] [--query Q] [--tasks T] [--side S]
                           [--filters F] [--blocks B] [--inner-lr A] [--inner-steps I]
                           [--hidden H] [--updates U] [--meta-lr L]
                           [--steps N] [--threads T] [--device cuda]

The learner, with functional parameters (a list of tensors, as MAML implementations keep
them): per block a 3×3 convolution (padding 1, no bias), batch normalization with the
batch's statistics (scale and shift, eps 1e-5), ReLU, the last row and column dropped if the
side is odd, 2×2 max pooling; then a linear head (weight [features, way]: x @ W + b). Weights
start as randbench's do: PyTorch's default U(±1/√fan_in) for the convolutions and the head,
scale 1, shift 0.

MAML: per task, I inner steps θ' = θ − A·∇θ' loss(support) (the gradient kept in the graph
for second order, detached for first order).

The meta-learner LSTM: the learner's parameters flattened into one vector c (its start c_0
learned), and per task U updates c ← f ⊙ c − i ⊙ ∇, coordinatewise. The gradient and the loss
on the support set are constants (detached: the paper's first-order choice), preprocessed by
Andrychowicz et al.'s log-sign (p = 10) into four features; a first LSTM of H units (its
weight [4 + H, 4H] over the features and its output, gates i, f, o, g) reads them, and each
gate is σ(wᵀ[h; c; previous gate] + b), its weights shared by every coordinate (forget bias 5,
input bias −4.5). The meta-gradient is clipped to norm 0.25.

A step: the meta-loss is the mean over tasks of the query cross-entropy after adaptation;
backward and one Adam step (lr L). The T episodes (random images in [0, 1), labels class by
class) are fixed for the whole run: the timing needs only their shapes. Each of N steps is
timed after 2 warm-up steps; prints the median and one JSON object on stdout.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

from common import add_machine_options, machine, report

EPS = 1e-5


def init_params(side, filters, blocks, way, gen):
    """θ in randbench's order: per block the kernel, the scale and the shift; the head."""

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    params = []
    channels = 1
    for _ in range(blocks):
        params.append(uniform((filters, channels, 3, 3), channels * 9))
        params.append(torch.ones(filters))
        params.append(torch.zeros(filters))
        channels = filters
    features = filters * (side >> blocks) ** 2
    params.append(uniform((features, way), features))
    params.append(uniform((way,), features))
    return params


def logits(params, x, blocks):
    h = x
    for b in range(blocks):
        w, scale, shift = params[3 * b : 3 * b + 3]
        h = F.conv2d(h, w, padding=1)
        h = F.batch_norm(h, None, None, weight=scale, bias=shift, training=True, eps=EPS)
        h = F.relu(h)
        side = h.shape[2]
        if side % 2 == 1:
            h = h[:, :, : side - 1, : side - 1]
        h = F.max_pool2d(h, 2)
    h = h.reshape(h.shape[0], -1)
    return h @ params[-2] + params[-1]


def adapt(params, x, y, a):
    """θ after the inner loop on the support set (x, y)."""
    second = a.order == "second"
    for _ in range(a.inner_steps):
        loss = F.cross_entropy(logits(params, x, a.blocks), y)
        grads = torch.autograd.grad(loss, params, create_graph=second)
        if not second:
            grads = [g.detach() for g in grads]
        params = [p - a.inner_lr * g for p, g in zip(params, grads)]
    return params


def log_sign(x, p=10.0):
    """Andrychowicz et al.'s preprocessing: [log|x|/p, sign x] where |x| ≥ e^−p, else
    [−1, e^p·x]; x [n] to [2, n]."""
    big = (x.abs() >= math.exp(-p)).float()
    log = x.abs().clamp_min(math.exp(-p)).log() / p
    first = big * log - (1 - big)
    second = big * x.sign() + (1 - big) * math.exp(p) * x
    return torch.stack([first, second])


def meta_learner_params(hidden, gen):
    """The meta-learner's weights in randbench's order: the first LSTM's weight and bias, then
    the forget and the input gate's weight and bias."""

    def uniform(shape, bound):
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    h = hidden
    return [
        uniform((4 + h, 4 * h), 1 / math.sqrt(h)),
        uniform((4 * h,), 1 / math.sqrt(h)),
        uniform((h + 2, 1), 0.01),
        torch.full((1,), 5.0),
        uniform((h + 2, 1), 0.01),
        torch.full((1,), -4.5),
    ]


def meta_learn(phi, theta0, x, y, a):
    """The learner's parameters after the meta-learner's updates on the support set (x, y)."""
    w, b, wf, bf, wi, bi = phi
    shapes = [p.shape for p in theta0]
    sizes = [p.numel() for p in theta0]
    c = torch.cat([p.reshape(-1) for p in theta0])
    n = c.numel()
    h = torch.zeros(a.hidden, n, device=c.device)
    cell = torch.zeros(a.hidden, n, device=c.device)
    forget = torch.zeros(1, n, device=c.device)
    input_ = torch.zeros(1, n, device=c.device)

    def unflatten(c):
        return [part.reshape(shape) for part, shape in zip(torch.split(c, sizes), shapes)]

    for _ in range(a.updates):
        theta = unflatten(c)
        loss = F.cross_entropy(logits(theta, x, a.blocks), y)
        grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, theta)]).detach()
        loss = loss.detach().reshape(1)
        features = torch.cat([log_sign(grad), log_sign(loss).expand(2, n)])
        gates = torch.cat([w, b.reshape(1, -1)]).t() @ torch.cat([features, h, torch.ones(1, n, device=c.device)])
        i, f, o, g = gates.split(a.hidden)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(cell)
        row = c.reshape(1, n)
        forget = torch.sigmoid(wf.t() @ torch.cat([h, row, forget]) + bf)
        input_ = torch.sigmoid(wi.t() @ torch.cat([h, row, input_]) + bi)
        c = (forget * row - input_ * grad.reshape(1, n)).reshape(n)
    return unflatten(c)


def episodes(a, gen, device):
    """T episodes stacked, as randbench's inputs: support [T·N·K, 1, s, s] and query
    [T·N·Q, 1, s, s], labels class by class within each episode."""

    def images(n):
        return torch.rand(n, 1, a.side, a.side, generator=gen).to(device)

    def labels(per_class):
        return torch.arange(a.way).repeat_interleave(per_class).repeat(a.tasks).to(device)

    return images(a.tasks * a.way * a.shot), labels(a.shot), images(a.tasks * a.way * a.query), labels(a.query)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(a, device):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    learner = init_params(a.side, a.filters, a.blocks, a.way, gen)
    phi = meta_learner_params(a.hidden, gen) if a.method == "meta-learner" else []
    meta_params = [p.to(device).requires_grad_(True) for p in phi + learner]
    phi, theta = meta_params[: len(phi)], meta_params[len(phi) :]
    meta = torch.optim.Adam(meta_params, lr=a.meta_lr)
    sx, sy, qx, qy = episodes(a, gen, device)
    s, q = a.way * a.shot, a.way * a.query
    times, losses = [], []
    for k in range(a.steps + 2):
        t = time.perf_counter()
        meta_loss = 0.0
        for task in range(a.tasks):
            support = sx[task * s : (task + 1) * s], sy[task * s : (task + 1) * s]
            if a.method == "meta-learner":
                adapted = meta_learn(phi, theta, *support, a)
            else:
                adapted = adapt(theta, *support, a)
            out = logits(adapted, qx[task * q : (task + 1) * q], a.blocks)
            meta_loss = meta_loss + F.cross_entropy(out, qy[task * q : (task + 1) * q])
        meta_loss = meta_loss / a.tasks
        meta.zero_grad(set_to_none=True)
        meta_loss.backward()
        if a.method == "meta-learner":
            torch.nn.utils.clip_grad_norm_(meta_params, 0.25)
        meta.step()
        sync(device)
        losses.append(meta_loss.item())  # read every step, as randbench's side reads it
        dt = time.perf_counter() - t
        if k >= 2:
            times.append(dt)
    times.sort()
    return {
        "median_step_seconds": times[len(times) // 2],
        "steps": len(times),
        "method": a.method,
        "order": a.order,
        "way": a.way,
        "shot": a.shot,
        "query": a.query,
        "tasks": a.tasks,
        "first_meta_loss": losses[0],
        "last_meta_loss": losses[-1],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["maml", "meta-learner"], default="maml")
    ap.add_argument("--order", choices=["first", "second"], default="second")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--side", type=int, default=28)
    ap.add_argument("--filters", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--inner-lr", type=float, default=0.4)
    ap.add_argument("--inner-steps", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=20)
    ap.add_argument("--updates", type=int, default=12)
    ap.add_argument("--meta-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=20)
    add_machine_options(ap)
    a = ap.parse_args()
    device = machine(a)
    report(benchmark(a, device), device)


if __name__ == "__main__":
    main()
