"""Walk cost in OpenMM vs a pure-PyTorch BAOAB loop, and throughput vs the number of chains.

For K independent chains of capped alanine dipeptide (10 heavy atoms each) in one System:
seconds per walk step inside OpenMM (TorchForce and PythonForce backends) and in a plain torch
loop calling the same TorchScript denoiser (the published code's way); their ratio; and walk
frames per second (K per step; each one a clean sample after its jump).

    python benchmarks/walk_throughput.py                      # CPU, K = 1, 8, 64
    python benchmarks/walk_throughput.py --platform CUDA --chains 1 8 64 256 1024   # a GPU, < 5 min

The model is models/capped_2aa.pt when present, else a randomly initialised NetworkConfig()
(63k parameters: cheaper than the shipped 248k network). Prints a table; not a test.
"""

import argparse
import os
import sys
import warnings

import openmm
import torch
from openmm import app

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import seconds_per_call, torch_baoab  # noqa: E402

import openmm_jamun as oj  # noqa: E402
from openmm_jamun.data.build import build_peptide  # noqa: E402
from openmm_jamun.model.export import export_denoiser, load_checkpoint  # noqa: E402
from openmm_jamun.model.network import Denoiser, NetworkConfig  # noqa: E402
from openmm_jamun.sample import MODELS_DIR, DEFAULT_MODEL  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=str(MODELS_DIR / f"{DEFAULT_MODEL}.pt"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    device = "cuda" if args.platform == "CUDA" else "cpu"
    if os.path.isfile(args.model):
        denoiser, _ = load_checkpoint(args.model)
        label = os.path.basename(args.model)
    else:
        torch.manual_seed(0)
        denoiser, label = Denoiser(NetworkConfig(), 0.04, 0.12), "random default network"
    topology, positions = build_peptide("A")
    platform = openmm.Platform.getPlatformByName(args.platform)
    properties = {"Threads": str(args.threads)} if args.platform == "CPU" else {}
    sync = torch.cuda.synchronize if device == "cuda" else None
    print(f"model: {label}; platform {args.platform}; torch threads {args.threads}")
    print(f"{'K':>5} {'atoms':>6} {'torch ms/step':>14} {'TorchForce':>11} {'ratio':>6} {'PythonForce':>12} "
          f"{'ratio':>6} {'frames/s (best)':>16}")
    for K in args.chains:
        module = export_denoiser(denoiser, topology, chains=K)
        walk = oj.create_noised_system(topology, positions, module, seed=0)
        y0 = torch.tensor(walk.positions._value, dtype=torch.float32, device=device)
        module_dev = module.to(device)
        pure = seconds_per_call(lambda: torch_baoab(module_dev, y0, args.steps), 1, warmup=1,
                                synchronize=sync) / args.steps
        module = module.cpu()
        row = [pure]
        for backend in ("torch", "python"):
            system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(walk.system))
            if backend == "torch":
                system.addForce(oj.JamunForce(module))
            else:
                system.addForce(oj.JamunPythonForce(module, device=device))
            simulation = app.Simulation(walk.topology, system, oj.JamunIntegrator(), platform, properties)
            simulation.context.setPositions(walk.positions)
            simulation.context.setVelocities(walk.velocities)
            per_step = seconds_per_call(lambda: simulation.step(args.steps), 1, warmup=1) / args.steps
            row.append(per_step)
            del simulation
        best = min(row[1:])
        print(f"{K:>5} {K * 10:>6} {row[0] * 1e3:>14.2f} {row[1] * 1e3:>11.2f} {row[1] / row[0]:>6.2f} "
              f"{row[2] * 1e3:>12.2f} {row[2] / row[0]:>6.2f} {K / best:>16.0f}")


if __name__ == "__main__":
    main()
