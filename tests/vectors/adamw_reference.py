"""Parameters after AdamW steps from torch.optim.AdamW, the oracle of the Rust AdamW test
(`kernel/src/train/optim.rs`, test `matches_torch_adamw`).

Run: ~/.cache/tunelab/refvenv/bin/python tests/vectors/adamw_reference.py
Prints one JSON object per case: the settings, the fixed gradients of each step, the
starting state (`warm`: moments and step count, as a checkpoint restores them; null for a
fresh optimiser) and the parameters after every step, in float64 (repr, round-trippable).
"""
import json

import torch

torch.set_default_dtype(torch.float64)

CASES = [
    {
        "name": "cold",
        "params": [1.0, -2.0, 0.5, 0.0],
        "grads": [[0.5, 0.25, -0.125, 0.0], [-1.0, 2.0, 0.0, 1e-3], [0.3, -0.7, 4.0, -2.0]],
        "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "warm": None,
    },
    {
        "name": "other_hyperparameters",
        "params": [0.25, -0.75, 3.0],
        "grads": [[10.0, -0.01, 0.2], [-5.0, 0.02, 0.2], [1e-4, 0.0, -0.2], [2.0, 2.0, 2.0]],
        "lr": 0.05, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.1, "warm": None,
    },
    {
        "name": "warm",
        "params": [0.4, -1.5, 2.0],
        "grads": [[0.1, -0.2, 0.3], [-0.4, 0.5, 0.0]],
        "lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
        "warm": {"step": 5, "exp_avg": [0.05, -0.02, 0.1], "exp_avg_sq": [0.001, 0.0004, 0.02]},
    },
]


def run(case):
    p = torch.nn.Parameter(torch.tensor(case["params"]))
    opt = torch.optim.AdamW([p], lr=case["lr"], betas=tuple(case["betas"]), eps=case["eps"],
                            weight_decay=case["weight_decay"], foreach=False)
    warm = case["warm"]
    if warm is not None:
        opt.state[p] = {
            "step": torch.tensor(float(warm["step"])),
            "exp_avg": torch.tensor(warm["exp_avg"]),
            "exp_avg_sq": torch.tensor(warm["exp_avg_sq"]),
        }
    after = []
    for g in case["grads"]:
        p.grad = torch.tensor(g)
        opt.step()
        after.append([float(x) for x in p.detach()])
    return dict(case, after=after)


if __name__ == "__main__":
    print(f"# torch {torch.__version__}")
    for case in CASES:
        print(json.dumps(run(case)))
