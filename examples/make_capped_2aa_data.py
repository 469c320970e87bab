"""Regenerate the reference MD behind the shipped default model (openmm_jamun/models/capped_2aa.pt).

Reads examples/capped_2aa_data.json (peptide -> split, ns, seed, equilibration) and runs `run_md`
for each into data/md/<SEQ>/, resuming any run that was interrupted. On one CPU thread a capped
dipeptide runs at ~250 ns/day, so the training + validation set (158 + 3 peptides, ~100 ns) takes
~9 h (run several with --threads 1 side by side) and each 10-ns test reference ~1 h. Then two runs:

    python examples/make_capped_2aa_data.py [--splits train val]   # default: all splits
    torchrun --nproc_per_node 2 -m openmm_jamun.cli train examples/train_capped_2aa.json     # stage 1: 63 peptides, from scratch
    torchrun --nproc_per_node 2 -m openmm_jamun.cli train examples/finetune_capped_2aa.json  # stage 2: all 158, from stage 1

The configs reproduce the recipe, not the exact weights: stage 1 of the shipped model trained on the
first 0.25 ns of most of its 63 runs (they were extended later) and changed its learning-rate schedule
once on the way (the card's "training" says how).
"""

import argparse
import json
import os

from openmm import unit

from openmm_jamun.data.md import run_md

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/md")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test (unseen)"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with open(os.path.join(HERE, "capped_2aa_data.json")) as handle:
        recipe = json.load(handle)
    for sequence, entry in recipe.items():
        if entry["split"] not in args.splits:
            continue
        record = run_md(sequence, os.path.join(args.out, sequence), ns=entry["ns"], seed=entry["seed"],
                        threads=args.threads, equilibration=entry["equilibration_ps"] * unit.picosecond)
        print(f"{sequence}: {record['length_ns']} ns ({entry['split']})", flush=True)


if __name__ == "__main__":
    main()
