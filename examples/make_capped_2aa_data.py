"""Regenerate the reference MD behind the shipped default model (openmm_jamun/models/capped_2aa.pt).

Reads examples/capped_2aa_data.json (peptide -> split, ns, seed, equilibration) and runs `run_md`
for each into datasets/capped_2aa/<SEQ>/ (heavy-atom XTC, all-atom topology and checkpoint), resuming
any run that was interrupted, and keeps datasets/capped_2aa/manifest.json (frames and a SHA-256 of
each trajectory) up to date. The training configs read that directory, which is committed. On one CPU
thread a capped dipeptide runs at 250-650 ns/day, depending on the machine (the progress bar shows
ps/s), so the training + validation set (158 + 3 peptides, ~100 ns) takes 4-9 h of one thread (run
several with --threads 1 side by side) and each 10-ns test reference 0.4-1 h. Then two runs:

    python examples/make_capped_2aa_data.py [--splits val train]   # default: val and train
    torchrun --nproc_per_node 2 -m openmm_jamun.cli train examples/train_capped_2aa.json     # stage 1: 63 peptides, from scratch
    torchrun --nproc_per_node 2 -m openmm_jamun.cli train examples/finetune_capped_2aa.json  # stage 2: all 158, from stage 1

The configs reproduce the recipe, not the exact weights: stage 1 of the shipped model trained on the
first 0.25 ns of most of its 63 runs (they were extended later) and changed its learning-rate schedule
once on the way (the card's "training" says how).
"""

import argparse
import hashlib
import json
import os

from openmm import unit

from openmm_jamun.data.md import SIDECAR_FILE, TRAJECTORY_FILE, run_md
from openmm_jamun.records import read_json, write_json

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/capped_2aa")
    parser.add_argument("--splits", nargs="+", default=["val", "train"],
                        help="splits of the recipe to run, in this order ('test (unseen)': the 10-ns references)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, metavar="SEQ",
                        help="these peptides only (run several processes on disjoint lists side by side)")
    args = parser.parse_args()
    with open(os.path.join(HERE, "capped_2aa_data.json")) as handle:
        recipe = json.load(handle)
    for split in args.splits:
        for sequence, entry in recipe.items():
            if entry["split"] != split or (args.only is not None and sequence not in args.only):
                continue
            record = run_md(sequence, os.path.join(args.out, sequence), ns=entry["ns"], seed=entry["seed"],
                            threads=args.threads, equilibration=entry["equilibration_ps"] * unit.picosecond,
                            trajectory_atoms="heavy")
            write_manifest(args.out, recipe)
            print(f"{sequence}: {record['length_ns']} ns ({split})", flush=True)


def write_manifest(out: str, recipe: dict) -> None:
    """manifest.json: every finished run under ``out`` with its split, length and trajectory checksum."""
    peptides = {}
    for sequence, entry in recipe.items():
        sidecar = os.path.join(out, sequence, SIDECAR_FILE)
        if not os.path.isfile(sidecar):
            continue
        record = read_json(sidecar)
        with open(os.path.join(out, sequence, TRAJECTORY_FILE), "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        peptides[sequence] = {"split": entry["split"], "frames": record["frames"], "length_ns": record["length_ns"],
                              "complete": record["length_ns"] >= entry["ns"], "seed": record["seed"],
                              "trajectory_atoms": record.get("trajectory_atoms", "all"), "sha256": digest}
    write_json(os.path.join(out, "manifest.json"),
               {"recipe": "examples/capped_2aa_data.json", "command": "python examples/make_capped_2aa_data.py",
                "peptides": peptides})


if __name__ == "__main__":
    main()
