"""Side by side: several `benchmarks/evaluate_model.py` evaluations (models, plain or Metropolis
walks), one row each, averaged over their peptides. Prints the model card's comparison table.

    python benchmarks/compare_models.py runs/eval runs/eval-energy runs/eval-energy-metropolis

Each argument is an evaluation's ``--out`` directory (it holds ``evaluation.json``); only the
peptides every evaluation has are averaged, so rows compare like with like.
"""

import argparse
import os
import sys

import numpy as np

from openmm_jamun.records import read_json

#: (column title, figure of evaluate_model.figures, format)
COLUMNS = [("backbone JSD", "backbone_jsd", "{:.3f}"), ("side-chain JSD", "sidechain_jsd", "{:.3f}"),
           ("φ/ψ JSD (2-D)", "phi_psi_jsd_2d", "{:.3f}"), ("jump backbone JSD", "jump_backbone_jsd", "{:.3f}"),
           ("walk minus jump", "walk_minus_jump_backbone_jsd", "{:.3f}"),
           ("largest φ/ψ basin error", "largest_basin_error", "{:.1%}"),
           ("raw frames fell apart", "fell_apart_fraction", "{:.1%}"), ("raw D centre", "d_centre_fraction", "{:.1%}"),
           ("raw ω out of trans", "non_trans_fraction", "{:.1%}"), ("relaxed valid", "relaxed_valid_fraction", "{:.1%}"),
           ("walk ms/step", "walk_ms_per_step", "{:.0f}"), ("acceptance", "acceptance_rate", "{:.1%}"),
           ("independent samples per walk s", "independent_samples_per_walk_s", "{:.2f}"),
           ("score asymmetry", "score_asymmetry", "{:.3f}")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluations", nargs="+", help="evaluate_model.py --out directories")
    args = parser.parse_args()
    records = []
    for directory in args.evaluations:
        path = os.path.join(directory, "evaluation.json")
        if not os.path.isfile(path):
            sys.exit(f"error: {path} does not exist (run benchmarks/evaluate_model.py --out {directory})")
        records.append((directory, read_json(path)))
    common = set.intersection(*(set(record["peptides"]) for _, record in records))
    if not common:
        sys.exit("error: the evaluations share no peptide")
    print(f"mean over {', '.join(sorted(common))}; JS distances in base e\n")
    print("| model | walk | steps × chains | " + " | ".join(title for title, _, _ in COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for directory, record in records:
        cells = []
        for _, key, form in COLUMNS:
            values = [record["peptides"][peptide].get(key) for peptide in sorted(common)]
            values = [value for value in values if value is not None]
            cells.append(form.format(float(np.mean(values))) if values else "n/a")
        walk = "Metropolis" if record.get("metropolis") else "plain"
        if record.get("timestep_ps"):
            walk += f", step {record['timestep_ps']} ps"
        print(f"| {record['model']} | {walk} | "
              f"{record['steps']} × {record['chains']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
