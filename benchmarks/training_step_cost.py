"""Cost of one training step: a direct denoiser against its energy-parametrised form.

The shipped default model (direct) and the shipped energy model (the same network g inside
E_θ = ‖g(y) − y‖²/2σ² + bond tail) each take Adam steps on the same batches of σ-noised frames from
``datasets/capped_2aa``: the direct model backpropagates once, the energy model twice (its jump is
y − σ²∇E_θ, and the loss is differentiated through that gradient). One process, one
torch thread: the share of a step that each of the 2 processes of the shipped DDP runs takes.

    python benchmarks/training_step_cost.py [--batch 16] [--steps 10]

Prints seconds per step for each parametrisation and their ratio; not a test.
"""

import argparse
import os
import time
import warnings

import torch

from openmm_jamun.data.dataset import FrameSampler, load_peptide
from openmm_jamun.model.export import load_checkpoint
from openmm_jamun.model.registry import resolve_model
from openmm_jamun.records import read_json
from openmm_jamun.train.trainer import _generator, denoising_loss


def seconds_per_step(denoiser, sampler_seed, peptides, batch, steps, warmup=2):
    """Mean wall seconds of a training step (sample, loss, backward, Adam) after ``warmup`` steps."""
    denoiser.train().requires_grad_(True)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-4)
    sampler = FrameSampler(peptides, seed=sampler_seed)
    losses, times = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = denoising_loss(denoiser, sampler.sample(batch), denoiser.sigma, denoiser.c_out,
                              _generator(0, 0, step, 1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return sum(times[warmup:]) / steps, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/capped_2aa")
    parser.add_argument("--peptides", type=int, default=8,
                        help="the first N finished peptides of --data's manifest.json (default 8)")
    parser.add_argument("--batch", type=int, default=16, help="frames per step (default 16: one rank's share of 32)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--direct", default="capped_2aa")
    parser.add_argument("--energy", default="capped_2aa_energy")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    manifest = read_json(os.path.join(args.data, "manifest.json"))["peptides"]
    names = sorted(name for name, entry in manifest.items() if entry["complete"])[: args.peptides]
    peptides = [load_peptide(os.path.join(args.data, name)) for name in names]
    print(f"{len(peptides)} peptides of {args.data} ({' '.join(names)}); batch {args.batch}; one thread; "
          f"mean of {args.steps} steps")
    rows = {}
    for kind, model in (("direct", args.direct), ("energy", args.energy)):
        denoiser, _ = load_checkpoint(resolve_model(model), averaged=True, parametrization=kind)
        rows[kind], losses = seconds_per_step(denoiser, 0, peptides, args.batch, args.steps)
        print(f"{kind:>7} ({model}): {rows[kind]:.3f} s/step (loss {losses[0]:.3f} → {losses[-1]:.3f})")
    print(f"energy / direct: {rows['energy'] / rows['direct']:.2f}×")


if __name__ == "__main__":
    main()
