"""Walk cost and clean-sample throughput: OpenMM (both force backends) against a pure-PyTorch BAOAB loop.

For K independent chains of the capped dipeptide AA (ACE-ALA-ALA-NME, 15 heavy atoms: what the
default model was trained on) in one System, with the default model (or ``--model``: an energy
model's walk differentiates its energy every step):

* walk ms/step: one step of all K chains, inside OpenMM (TorchForce, PythonForce) and in a plain torch loop
  calling the same TorchScript denoiser (the published code's way); chain steps/s = K per step;
* clean samples/s: what a run yields, jumps included. A clean sample is a jumped frame, written by a
  JumpReporter once every ``--interval`` steps (default 10, the sampler's); each costs one extra
  denoiser forward. So samples/s = K / (interval · ms per step + ms per jump).

    python benchmarks/walk_throughput.py                      # CPU, K = 1, 8, 64
    python benchmarks/walk_throughput.py --platform CUDA --chains 1 8 64 256 1024   # a GPU, < 5 min

Prints a table; not a test.
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import seconds_per_call, torch_baoab  # noqa: E402

from openmm_jamun import JumpReporter, create_walk_simulation  # noqa: E402
from openmm_jamun.data.build import build_peptide  # noqa: E402
from openmm_jamun.model.registry import denoiser_for, resolve_model  # noqa: E402


def run_seconds(simulation, steps):
    simulation.step(steps)  # warm-up
    start = time.perf_counter()
    simulation.step(steps)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement (default 200)")
    parser.add_argument("--interval", type=int, default=10, help="steps between clean samples (default 10)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if args.platform.upper() == "CUDA" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else None
    model = resolve_model(args.model)
    topology, positions = build_peptide("AA")
    print(f"model: {model.name}; AA; platform {args.platform}; torch threads {args.threads}; "
          f"a clean sample every {args.interval} steps")
    print(f"{'K':>5} {'atoms':>6} {'torch ms/step':>14} {'TorchForce':>11} {'PythonForce':>12} "
          f"{'chain steps/s':>14} {'clean samples/s':>16}")
    with tempfile.TemporaryDirectory() as scratch:
        for K in args.chains:
            module = denoiser_for(model, topology, K)
            row = {}
            for backend in ("torch", "python"):
                simulation = create_walk_simulation(topology, positions, module, chains=K, platform=args.platform,
                                                    threads=args.threads, backend=backend, seed=0)
                row[backend] = run_seconds(simulation, args.steps) / args.steps
                if backend == "torch":
                    y0 = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value
                    y0 = torch.tensor(y0, dtype=torch.float32, device=device)
                    sampling = simulation
            fastest = min(row, key=row.get)
            if fastest != "torch":
                sampling = create_walk_simulation(topology, positions, module, chains=K, platform=args.platform,
                                                  threads=args.threads, backend=fastest, seed=0)
            sampling.reporters.append(JumpReporter(os.path.join(scratch, f"k{K}.dcd"), args.interval))
            steps = max(args.interval, args.steps // args.interval * args.interval)
            with_jumps = run_seconds(sampling, steps)
            samples_per_s = K * (steps // args.interval) / with_jumps
            pure_module = module.to(device)
            pure = seconds_per_call(lambda: torch_baoab(pure_module, y0, args.steps), 1, warmup=1,
                                    synchronize=sync) / args.steps
            print(f"{K:>5} {K * module.atoms_per_chain:>6} {pure * 1e3:>14.2f} {row['torch'] * 1e3:>11.2f} "
                  f"{row['python'] * 1e3:>12.2f} {K / min(row.values()):>14.0f} {samples_per_s:>16.0f}")


if __name__ == "__main__":
    main()
