"""Cost of one training step: a direct denoiser against its energy-parametrised form.

The shipped default model (direct) and the shipped energy model (the same network g inside
E_θ = ‖g(y) − y‖²/2σ² + bond tail) take Adam steps on the same batches of σ-noised frames, drawn
as a training config draws them (its peptides, balance and off-manifold examples; by default the
last conservative fine-tune's): the direct model backpropagates once, the energy model twice (its
jump is y − σ²∇E_θ, and the loss is differentiated through that gradient). The two are timed in
turn, step by step, so that a change in the machine's load falls on both. One process, one torch
thread, each rank's share of the config's batch with ``--processes`` DDP processes (default 2).
Not timed: the DDP all-reduce, the weight average, validation and checkpoints.

    python benchmarks/training_step_cost.py [--config examples/finetune_energy_bondlimit_capped_2aa.json] [--steps 20]

Prints the median seconds per step for each parametrisation and their ratio; not a test.
"""

import argparse
import os
import statistics
import time
import warnings

import torch

from openmm_jamun.data.dataset import FrameSampler, load_peptide
from openmm_jamun.model.export import load_checkpoint
from openmm_jamun.model.registry import resolve_model
from openmm_jamun.train import TrainConfig
from openmm_jamun.train.trainer import _generator, training_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/finetune_energy_bondlimit_capped_2aa.json")
    parser.add_argument("--processes", type=int, default=2, help="DDP processes the batch is split over (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--direct", default="capped_2aa")
    parser.add_argument("--energy", default="capped_2aa_energy")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    config = TrainConfig.from_file(args.config)
    if config.batch_size % args.processes:
        raise SystemExit(f"error: batch {config.batch_size} does not split over {args.processes} processes")
    batch = config.batch_size // args.processes
    peptides = [load_peptide(os.path.join(config.data_root, name), config.stride) for name in config.train]
    print(f"{args.config}: {len(peptides)} peptides, balance {config.balance}, {batch} frames per step "
          f"(batch {config.batch_size} over {args.processes} processes); one thread; median of {args.steps} steps")
    models, optimizers, samplers, times = {}, {}, {}, {}
    for kind, model in (("direct", args.direct), ("energy", args.energy)):
        denoiser, _ = load_checkpoint(resolve_model(model), averaged=True, parametrization=kind)
        if abs(denoiser.sigma - config.sigma) > 1e-9:
            raise SystemExit(f"error: {model} is for σ = {denoiser.sigma} nm, {args.config} trains σ = {config.sigma} nm")
        models[kind] = denoiser.train().requires_grad_(True)
        optimizers[kind] = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
        samplers[kind] = FrameSampler(peptides, seed=0, balance=config.balance)  # the same frames for both
        times[kind] = []
    for step in range(args.warmup + args.steps):
        for kind, denoiser in models.items():
            start = time.perf_counter()
            training_step(denoiser, optimizers[kind], samplers[kind].sample(batch), config, denoiser.c_out,
                          _generator(config.seed, 0, step, 1))
            if step >= args.warmup:
                times[kind].append(time.perf_counter() - start)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    for kind, model in (("direct", args.direct), ("energy", args.energy)):
        print(f"{kind:>7} ({model}): {median[kind]:.3f} s/step "
              f"(range {min(times[kind]):.3f}-{max(times[kind]):.3f})")
    print(f"energy / direct: {median['energy'] / median['direct']:.2f}×")


if __name__ == "__main__":
    main()
