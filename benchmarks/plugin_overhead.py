"""Per-step cost of the walk inside OpenMM vs a direct call of the same TorchScript denoiser.

Analytic Gaussian denoiser, N = 22, 200, 2000 particles, both force backends,
CPU platform with one thread (torch too). Prints a table; not a test.

    python benchmarks/plugin_overhead.py [--steps 2000]
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

import openmm_jamun as oj

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import seconds_per_forward  # noqa: E402


def time_walk(denoiser, topology, mu, backend, steps):
    simulation = oj.create_walk_simulation(topology, mu, denoiser, backend=backend, seed=0)
    simulation.step(50)
    start = time.perf_counter()
    simulation.step(steps)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'N':>6} {'backend':>8} {'direct µs':>10} {'OpenMM µs/step':>15} {'overhead µs':>12} {'ratio':>6}")
    for n in (22, 200, 2000):
        denoiser, topology, mu = oj.gaussian_example(n)
        direct = seconds_per_forward(denoiser, torch.from_numpy(np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)), args.steps, warmup=20)
        for backend in ("torch", "python"):
            per_step = time_walk(denoiser, topology, mu, backend, args.steps)
            print(f"{n:>6} {backend:>8} {direct * 1e6:>10.1f} {per_step * 1e6:>15.1f} "
                  f"{(per_step - direct) * 1e6:>12.1f} {per_step / direct:>6.1f}")


if __name__ == "__main__":
    main()
