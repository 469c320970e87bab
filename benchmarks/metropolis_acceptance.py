"""Metropolis acceptance of an energy model's walk against chains and step size.

The Metropolis walk (`jamun sample --metropolis`, `JamunIntegrator(metropolis=True)`) accepts or
rejects the whole System's step at once, so with K chains in one System the energy error of all K
enters one test. For each K and each step (a fraction of the default JAMUN step δ = σ) this runs
a short walk of the peptide and prints the acceptance rate and the cost per step.

    python benchmarks/metropolis_acceptance.py AA --model capped_2aa_energy \\
        [--chains 1 8] [--step-scales 1 0.5 0.25] [--steps 200]

`--stiff-directions D ...` runs the same walk on an exact density instead of a model: N(μ, σ²I) in
D dimensions (D/3 atoms, each a point mass noised at σ). Every direction then has the curvature 1/σ²
that the exact noised density has along a direction in which the clean molecule does not move (a
bond, an angle: there Cov[x | y] ≈ 0 and ∇²(−log p_Y) = (I − Cov[x | y]/σ²)/σ² ≈ 1/σ²), so it shows
the acceptance that an accurate model's walk of a molecule with D such directions per chain can
expect (its soft directions add little energy error):

    python benchmarks/metropolis_acceptance.py --stiff-directions 3 15 30 45 --chains 1 8 --step-scales 1 0.75 0.5 0.25

Prints a table; not a test.
"""

import argparse
import time
import warnings

import numpy as np

from openmm_jamun import JamunIntegrator, create_walk_simulation, gaussian_mixture_denoiser
from openmm_jamun.model.gaussian import gaussian_topology


def stiff_walk(directions: int, chains: int, integrator):
    """A walk on N(μ, σ²I) in ``directions`` × ``chains`` dimensions (whole atoms: a multiple of 3)."""
    atoms = directions * chains // 3
    means = np.zeros((1, atoms, 3))
    means[0, :, 0] = 2.0 * np.arange(atoms)  # far apart: nothing couples them
    denoiser = gaussian_mixture_denoiser(means, widths=[0.0], weights=[1.0])
    return create_walk_simulation(gaussian_topology(atoms), means[0], denoiser, seed=0, integrator=integrator)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peptide", nargs="?", help="one-letter sequence (built as ACE-...-NME)")
    parser.add_argument("--model", help="an energy-parametrised model (name, checkpoint or export)")
    parser.add_argument("--stiff-directions", type=int, nargs="+", metavar="D",
                        help="instead of a model: the exact density N(μ, σ²I) with D dimensions per chain "
                             "(multiples of 3)")
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--step-scales", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--steps", type=int, default=200, help="Metropolis steps per measurement (after 20 unmeasured)")
    args = parser.parse_args()
    if args.stiff_directions:
        if args.peptide or args.model:
            parser.error("--stiff-directions replaces the peptide and --model")
        if any(d <= 0 or d % 3 for d in args.stiff_directions):
            parser.error(f"--stiff-directions must be positive multiples of 3 (whole atoms); got {args.stiff_directions}")
        cases = [(f"exact, {d} stiff directions", d) for d in args.stiff_directions]
    elif args.peptide and args.model:
        cases = [(f"{args.model} on {args.peptide}", None)]
    else:
        parser.error("give a peptide and --model, or --stiff-directions")
    default_step = JamunIntegrator().getStepSize()
    print(f"default step {default_step}; {args.steps} steps each")
    print("| density | chains | step / default | acceptance | walk ms/step |\n|---|---|---|---|---|")
    for label, directions in cases:
        for chains in args.chains:
            for scale in args.step_scales:
                integrator = JamunIntegrator(metropolis=True, timestep=scale * default_step)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if directions is None:
                        simulation = create_walk_simulation(args.peptide, model=args.model, chains=chains, seed=0,
                                                            integrator=integrator)
                    else:
                        simulation = stiff_walk(directions, chains, integrator)
                simulation.step(20)  # warm-up: TorchScript's first calls, and the walk leaves its start
                trials, accepted = integrator.n_trials, integrator.n_accept
                start = time.perf_counter()
                simulation.step(args.steps)
                seconds = time.perf_counter() - start
                rate = (integrator.n_accept - accepted) / (integrator.n_trials - trials)
                print(f"| {label} | {chains} | {scale:g} | {rate:.1%} | {1000 * seconds / args.steps:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
