"""Forward time of the exported denoiser on the CPU, and parameter counts.

Capped ALA dipeptide (10 heavy atoms), a capped 5-residue peptide, and K = 1, 8, 64
chains of the dipeptide; default and published-size configurations. One torch
thread (what the walk uses beside OpenMM on 2 cores). Prints a table; not a test.

    python benchmarks/denoiser_forward.py [--repeats 50] [--published]
"""

import argparse
import os
import sys
import warnings

import torch
from openmm import unit

from openmm_jamun.data.build import build_peptide
from openmm_jamun.model.export import export_denoiser
from openmm_jamun.model.featurize import featurize
from openmm_jamun.model.network import Denoiser, NetworkConfig, count_parameters

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import seconds_per_forward  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--published", action="store_true", help="also time the published-size network")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    configs = {"default": NetworkConfig()}
    if args.published:
        configs["published"] = NetworkConfig.published()
    for name, config in (("default", NetworkConfig()), ("published", NetworkConfig.published())):
        print(f"{name:>9} config: {count_parameters(Denoiser(config, 0.04, 0.3)):,} parameters")
    cases = [("ACE-A-NME", "A", 1), ("ACE-KWFSA-NME", "KWFSA", 1), ("ACE-A-NME", "A", 8), ("ACE-A-NME", "A", 64)]
    print(f"{'config':>9} {'molecule':>14} {'chains':>6} {'atoms':>6} {'ms/forward':>11} {'µs/chain':>9}")
    for name, config in configs.items():
        torch.manual_seed(0)
        denoiser = Denoiser(config, 0.04, 0.3)
        for label, sequence, chains in cases:
            topology, positions = build_peptide(sequence, minimize=False)
            model = export_denoiser(denoiser, topology, chains=chains)
            x = torch.tensor(positions.value_in_unit(unit.nanometer)[featurize(topology).atom_indices],
                             dtype=torch.float32).repeat(chains, 1)
            seconds = seconds_per_forward(model, x + 0.04 * torch.randn_like(x), args.repeats)
            print(f"{name:>9} {label:>14} {chains:>6} {model.num_atoms:>6} {seconds * 1e3:>11.2f} "
                  f"{seconds / chains * 1e6:>9.0f}")


if __name__ == "__main__":
    main()
