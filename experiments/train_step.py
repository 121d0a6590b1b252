"""Training with TileLang attention: a small decoder-only transformer trained twice (claim C7).

A case is one model and training config: `layers` pre-norm blocks of width `d_model` with `heads`
heads (head dim d_model / heads), learned positions, a 4x GELU MLP, tied byte embeddings (`vocab`
256), sequences of `seq` tokens, `batch` sequences a step, `steps` AdamW steps (lr 1e-3 after a
linear warm-up of 10% of the steps, betas 0.9/0.95, weight decay 0.1, gradient norm clipped at 1),
bf16 autocast with fp32 master weights. The two backends differ only in the attention call:
`sdpa` is PyTorch's scaled_dot_product_attention (causal; PyTorch picks its kernel), `tilelang`
the TileLang forward and backward (kernels/autograd.py).

Data: a synthetic byte-level corpus from the seed, no download: an order-2 Markov chain over
`vocab` symbols whose next byte depends on the previous byte and on the class (value mod 4) of
the one before it: each such context allows 4 next bytes with random probabilities. The last
byte alone leaves up to 16 choices; the entropy left once the model also attends to the token
before is at most ln 4. One fresh batch per step, the same for both backends.

The gate: the reference is an SDPA training run from the same seed; each backend's build trains
its own run (the loss at every `log_every`-th step and the last, its wall-clock tokens/s), and
`check` passes when the two loss curves differ by at most `loss_tol` (nats) at every logged step
(max_abs = the largest difference, rel_l2 = ||diff|| / ||reference curve||). The `sdpa` row thus
shows the noise of two SDPA runs, the `tilelang` row TileLang against SDPA. The timed region is
one training step (forward, backward, clipping, optimizer step) on a fixed batch, after the run;
tokens/s = batch * seq / time. (A run's own tokens/s, in the curves file, comes after one warm-up
step on a throwaway model, so that kernel compilation is outside it.) The curves and each run's tokens/s are
the experiment's `curves` artifact: results/<hardware>/artifacts/train_step.curves.csv.

FLOPs per step = 6 * tokens * (12 * layers * d_model^2 + d_model * vocab) for the weights (forward
and backward of every linear layer and the tied output projection) + 3.5 * layers * 4 * batch *
d_model * A for attention (forward GEMMs 4 * b * d * A, backward 2.5x that; A = seq^2 / 2, the
causal area). Bytes = 32 per parameter, a lower bound: AdamW reads and writes the fp32 weights and
both moments and the gradients are written and read once (activations are not counted).
"""
from __future__ import annotations

from repro.measure.experiment import Backend, Experiment, needs_module, selected_dtypes

LR, WARMUP, BETAS, WEIGHT_DECAY, CLIP = 1e-3, 0.1, (0.9, 0.95), 0.1, 1.0
CANDIDATES, CLASSES = 4, 4  # next-byte choices per context; classes of the byte before the previous one
_REFERENCE: dict = {}  # (case key, seed, device) -> reference curve, one SDPA run per process


def cases(cfg) -> list[dict]:
    out = []
    for dtype in selected_dtypes(cfg):
        for m in cfg.models:
            out.append({"layers": int(m.layers), "d_model": int(m.d_model), "heads": int(m.heads), "seq": int(m.seq),
                        "batch": int(m.batch), "vocab": int(m.get("vocab", 256)), "steps": int(cfg.steps),
                        "log_every": int(cfg.log_every), "loss_tol": float(cfg.loss_tol), "dtype": dtype})
    return out


def validate_case(case: dict) -> None:
    if case["d_model"] % case["heads"] or case["d_model"] // case["heads"] not in (64, 128):
        raise ValueError(f"train_step: head dim d_model/heads must be 64 or 128, not {case['d_model'] / case['heads']}")
    if min(case["layers"], case["seq"], case["batch"], case["steps"], case["log_every"]) < 1 or case["vocab"] < 8:
        raise ValueError("train_step: layers, seq, batch, steps, log_every must be positive and vocab >= 8")
    if case["dtype"] != "bf16":
        raise ValueError(f"train_step: dtype {case['dtype']} unsupported; allowed: bf16")


def make_data(case: dict, seed: int, device: str, steps: int | None = None):
    """[steps * batch, seq + 1] byte tokens: the order-2 Markov chain of the module docstring."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    V, n, s = case["vocab"], (steps or case["steps"]) * case["batch"], case["seq"] + 1
    cand = torch.randint(0, V, (CLASSES * V, CANDIDATES), device=device, generator=g)
    probs = torch.rand(CLASSES * V, CANDIDATES, device=device, generator=g) ** 2 + 1e-3
    cum = (probs / probs.sum(-1, keepdim=True)).cumsum(-1)
    x = torch.empty(n, s, dtype=torch.long, device=device)
    x[:, :2] = torch.randint(0, V, (n, 2), device=device, generator=g)
    u = torch.rand(n, s, device=device, generator=g)
    for t in range(2, s):
        ctx = (x[:, t - 2] % CLASSES) * V + x[:, t - 1]
        pick = (u[:, t:t + 1] > cum[ctx]).sum(-1).clamp_max(CANDIDATES - 1)
        x[:, t] = cand[ctx, pick]
    return x


def sdpa_attention(q, k, v):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)


def tilelang_attention(q, k, v):
    from kernels.autograd import flash_attention

    return flash_attention(q, k, v, True)


def make_model(case: dict, attention):
    """The decoder-only transformer of the module docstring; attention(q, k, v) takes BSHD."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    d, h = case["d_model"], case["heads"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.up, self.down = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(self.n1(x)).view(b, s, 3, h, d // h).unbind(2)
            x = x + self.proj(attention(q, k, v).reshape(b, s, d))
            return x + self.down(F.gelu(self.up(self.n2(x))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.pos = nn.Embedding(case["vocab"], d), nn.Embedding(case["seq"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(case["layers"]))
            self.norm = nn.LayerNorm(d)
            nn.init.normal_(self.emb.weight, std=0.02)
            nn.init.normal_(self.pos.weight, std=0.02)

        def forward(self, tokens):  # [b, s] -> logits [b, s, vocab]
            x = self.emb(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
            for block in self.blocks:
                x = block(x)
            return self.norm(x) @ self.emb.weight.T

    return Model()


def trainer(case: dict, seed: int, device: str, attention):
    """(model, step): step(batch [b, seq + 1], lr) runs one optimizer step and returns the loss."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = make_model(case, attention).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device != "cpu")

    def step(batch, lr: float = LR):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, case["vocab"]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return loss.detach()

    return model, step


def train(case: dict, seed: int, device: str, attention):
    """Train `steps` steps; returns (loss curve [logged steps] on the CPU, logged step numbers,
    tokens/s of the whole run, the step function, the first batch)."""
    import time

    import torch

    data = make_data(case, seed, device)
    b, steps, every = case["batch"], case["steps"], case["log_every"]
    if device != "cpu":  # compile and initialise everything outside the timed run, on a throwaway model
        trainer(case, seed, device, attention)[1](data[:b])
    _, step = trainer(case, seed, device, attention)
    logged = [i for i in range(steps) if i % every == 0 or i == steps - 1]
    losses = []
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(data[i * b:(i + 1) * b], LR * min(1.0, (i + 1) / max(1, WARMUP * steps)))
        if i in logged:
            losses.append(loss)
    if device != "cpu":
        torch.cuda.synchronize()
    tokens_per_s = steps * b * case["seq"] / (time.perf_counter() - start)
    return torch.stack(losses).float().cpu(), logged, tokens_per_s, step, data[:b]


def make_inputs(case: dict, seed: int, device: str) -> dict:
    return {"seed": seed, "device": device}


def reference(case: dict, inputs: dict):
    """The SDPA run's loss curve (one per case, seed and device in a process)."""
    key = (tuple(sorted(case.items())), inputs["seed"], inputs["device"])
    if key not in _REFERENCE:
        _REFERENCE[key] = train(case, inputs["seed"], inputs["device"], sdpa_attention)[0]
    return _REFERENCE[key]


def _build(name: str, attention):
    def build(case: dict, inputs: dict):
        curve, logged, tokens_per_s, step, batch = train(case, inputs["seed"], inputs["device"], attention)
        inputs["curve"], inputs["logged"], inputs["tokens_per_s"] = curve, logged, tokens_per_s
        return lambda: step(batch)

    return build


def check(case: dict, inputs: dict, out, ref) -> dict:
    """Both loss curves within `loss_tol` at every logged step; the timed step's loss finite."""
    import math

    import torch

    curve = inputs["curve"]
    if not (torch.isfinite(curve).all() and torch.isfinite(out).all()):
        return {"passed": False, "error": "non-finite loss", "rel_l2": math.inf, "max_abs": math.inf}
    diff = (curve.double() - ref.double()).abs()
    worst = int(diff.argmax())
    max_abs, rel_l2 = float(diff.max()), float(diff.norm() / ref.double().norm())
    passed = max_abs <= case["loss_tol"]
    error = "" if passed else (f"loss differs from the SDPA run by {max_abs:.3g} at step {inputs['logged'][worst]} "
                               f"({float(curve[worst]):.4f} vs {float(ref[worst]):.4f}; tolerance {case['loss_tol']})")
    return {"passed": passed, "error": error, "rel_l2": rel_l2, "max_abs": max_abs}


def artifacts(case: dict, backend: str, inputs: dict) -> dict:
    """The run's loss curve and tokens/s, stored beside its row (results/<hw>/artifacts/)."""
    return {"curves": [{"seed": inputs["seed"], "step": step, "loss": float(loss),
                        "train_tokens_per_s": inputs["tokens_per_s"]}
                       for step, loss in zip(inputs["logged"], inputs["curve"])]}


def flops(case: dict) -> float:
    d, L, b, s = case["d_model"], case["layers"], case["batch"], case["seq"]
    weights = 6.0 * b * s * (12 * L * d * d + d * case["vocab"])
    return weights + 3.5 * L * 4.0 * b * d * (s * s / 2.0)


def parameters(case: dict) -> int:
    """Weights of the model of make_model: blocks, byte and position embeddings, layer norms."""
    d, L = case["d_model"], case["layers"]
    return L * (12 * d * d + 4 * d) + (case["vocab"] + case["seq"]) * d + 2 * d


def bytes_moved(case: dict) -> float:
    return 32.0 * parameters(case)


EXPERIMENT = Experiment(
    name="train_step",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("sdpa", build=_build("sdpa", sdpa_attention), trusted=True),
        Backend("tilelang", build=_build("tilelang", tilelang_attention), probe=needs_module("tilelang")),
    ],
    baseline="sdpa",
    check=check,
    validate_case=validate_case,
    artifacts=artifacts,
)
