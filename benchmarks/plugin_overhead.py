"""Per-step cost of the walk inside OpenMM vs a direct call of the same TorchScript denoiser.

Analytic Gaussian denoiser, N = 22, 200, 2000 particles, both force backends,
CPU platform with one thread (torch too). Prints a table; not a test.

    python benchmarks/plugin_overhead.py [--steps 2000]
"""

import argparse
import time

import numpy as np
import openmm
import torch
from openmm import app

import openmm_jamun as oj


def time_direct(denoiser, n, repeats):
    y = torch.from_numpy(np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32))
    with torch.inference_mode():
        for _ in range(20):
            denoiser(y)
        start = time.perf_counter()
        for _ in range(repeats):
            denoiser(y)
    return (time.perf_counter() - start) / repeats


def time_walk(denoiser, topology, mu, backend, steps):
    noised = oj.create_noised_system(topology, mu, denoiser, seed=0)
    noised.system.addForce(oj.make_jamun_force(denoiser, backend=backend))
    simulation = app.Simulation(noised.topology, noised.system, oj.JamunIntegrator(),
                                openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    simulation.context.setPositions(noised.positions)
    simulation.context.setVelocities(noised.velocities)
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
        direct = time_direct(denoiser, n, args.steps)
        for backend in ("torch", "python"):
            per_step = time_walk(denoiser, topology, mu, backend, args.steps)
            print(f"{n:>6} {backend:>8} {direct * 1e6:>10.1f} {per_step * 1e6:>15.1f} "
                  f"{(per_step - direct) * 1e6:>12.1f} {per_step / direct:>6.1f}")


if __name__ == "__main__":
    main()
