"""Metropolis acceptance of an energy model's walk against chains and step size.

The Metropolis walk (`jamun sample --metropolis`, `JamunIntegrator(metropolis=True)`) accepts or
rejects the whole System's step at once, so with K chains in one System the energy error of all K
enters one test. For each K and each step (a fraction of the default JAMUN step δ = σ) this runs
a short walk of the peptide and prints the acceptance rate and the cost per step.

    python benchmarks/metropolis_acceptance.py --model runs/capped_2aa_energy_ft/best.pt AA \\
        [--chains 1 8] [--step-scales 1 0.5 0.25] [--steps 200]

Prints a table; not a test.
"""

import argparse
import time
import warnings

from openmm_jamun import JamunIntegrator, create_walk_simulation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peptide", help="one-letter sequence (built as ACE-...-NME)")
    parser.add_argument("--model", required=True, help="an energy-parametrised model (name, checkpoint or export)")
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--step-scales", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--steps", type=int, default=200, help="Metropolis steps per measurement (after 20 unmeasured)")
    args = parser.parse_args()
    default_step = JamunIntegrator().getStepSize()
    print(f"model {args.model}; {args.peptide}; default step {default_step}; {args.steps} steps each")
    print("| chains | step / default | acceptance | walk ms/step |\n|---|---|---|---|")
    for chains in args.chains:
        for scale in args.step_scales:
            integrator = JamunIntegrator(metropolis=True, timestep=scale * default_step)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                simulation = create_walk_simulation(args.peptide, model=args.model, chains=chains, seed=0,
                                                    integrator=integrator)
            simulation.step(20)  # warm-up: TorchScript's first calls, and the walk leaves its start
            trials, accepted = integrator.n_trials, integrator.n_accept
            start = time.perf_counter()
            simulation.step(args.steps)
            seconds = time.perf_counter() - start
            rate = (integrator.n_accept - accepted) / (integrator.n_trials - trials)
            print(f"| {chains} | {scale:g} | {rate:.1%} | {1000 * seconds / args.steps:.0f} |", flush=True)


if __name__ == "__main__":
    main()
