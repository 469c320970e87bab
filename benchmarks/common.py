"""Shared pieces of the benchmarks: a pure-PyTorch BAOAB walk (the published code's way), timers,
the torsion basins the benchmarks count, and the reuse of a benchmark's finished walk."""

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from openmm_jamun.analysis.torsions import torsions
from openmm_jamun.model.registry import resolve_model
from openmm_jamun.records import read_json


def finished_walk(out, model, steps, **settings):
    """The run record in ``out`` if it is a finished walk of ``model`` for ``steps`` steps whose
    run.json holds ``settings`` (its keys and values), else None: a benchmark reuses only its own
    walk, never one left by another model or other settings."""
    path = os.path.join(out, "run.json")
    if not os.path.isfile(path):
        return None
    record = read_json(path)
    if Path(record["model"]).resolve() != resolve_model(model).resolve() or record.get("steps_done") != steps:
        return None
    return record if all(record.get(key) == value for key, value in settings.items()) else None


def torch_baoab(denoiser, y, steps, sigma=0.04, delta=None, friction=1.0, M=1.0, clip=100.0, generator=None):
    """JAMUN's reference walk in plain torch (docs/design.md), no OpenMM; returns the final y.

    One denoiser forward per step (the score at the new position is reused by the next step's B).
    An energy-parametrised denoiser's forward differentiates its energy, so it runs with autograd on.
    """
    delta = sigma if delta is None else delta
    a, b = math.exp(-friction), math.sqrt(-math.expm1(-2 * friction))

    def score(y):
        s = (denoiser(y).detach() - y) / sigma**2
        norm = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
        return s * torch.clamp(clip / norm, max=1.0)

    grad_mode = torch.enable_grad() if hasattr(denoiser, "energy") else torch.inference_mode()
    with grad_mode:
        v = torch.randn(y.shape, generator=generator, device=y.device) / math.sqrt(M)
        s = score(y)
        for _ in range(steps):
            v = v + 0.5 * delta * s / M
            y = y + 0.5 * delta * v
            v = a * v + b / math.sqrt(M) * torch.randn(y.shape, generator=generator, device=y.device)
            y = y + 0.5 * delta * v
            s = score(y)
            v = v + 0.5 * delta * s / M
    return y


def seconds_per_call(function, repeats, warmup=2, synchronize=None):
    for _ in range(warmup):
        function()
    if synchronize:
        synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if synchronize:
        synchronize()
    return (time.perf_counter() - start) / repeats


def seconds_per_forward(module, y, repeats, warmup=3):
    """Mean seconds of one forward of ``module`` on ``y`` without autograd."""
    with torch.inference_mode():
        return seconds_per_call(lambda: module(y), repeats, warmup=warmup)


#: Basin names in label order (:func:`basin_of`).
BASIN_NAMES = {"phi/psi": ("αR", "β/PPII", "αL"), "chi1": ("g+", "t", "g−")}


def basin_of(kind: str, angle: np.ndarray, partner: np.ndarray | None = None) -> np.ndarray:
    """Basin labels: φ/ψ pairs (degrees) into αR 0, β/PPII 1, αL 2; a χ1 into g+ 0, t 1, g− 2."""
    if kind == "phi":
        phi, psi = np.degrees(angle), np.degrees(partner)
        return np.where(phi > 0, 2, np.where((psi > -120) & (psi < 50), 0, 1))
    chi = np.degrees(angle) % 360
    return np.where(chi < 120, 0, np.where(chi < 240, 1, 2))


def basins(traj) -> dict[str, np.ndarray]:
    angles = torsions(traj)
    out = {}
    for key, value in angles.items():
        kind, residue = key.split(":")
        if kind == "phi" and f"psi:{residue}" in angles:
            out[f"phi/psi:{residue}"] = basin_of("phi", value, angles[f"psi:{residue}"])
        elif kind == "chi1":
            out[key] = basin_of("chi1", value)
    return out
