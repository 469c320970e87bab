"""Evaluate a model on unseen peptides: walk-jump samples against reference MD, and the jump alone.

For each peptide: ``jamun sample --raw`` (K chains, N steps, seed 0, one thread; ``--metropolis`` for
the Metropolis-exact walk of an energy model, ``--timestep`` for another step), ``jamun relax`` of its
samples (vacuum amber14, batches of 64, one thread), then ``jamun analyze``
against the peptide's reference MD with ``--model`` (which also jumps σ-noised reference frames: the
denoiser's error apart from the walk's). Prints the model card's Markdown tables and writes every
figure to ``OUT/evaluation.json``. A finished sample run and its analysis are reused, so an
interrupted evaluation continues where it stopped.

Besides the JS distances: the walk's cost (ms per step at K chains), the Metropolis acceptance rate,
the backbone decorrelation time (the slowest φ/ψ, in frames, K chains pooled as
``jamun analyze`` does) and the independent samples per walk second it gives (samples over that
time, over the walk's wall time), and the φ/ψ basin populations (αR, β/PPII, αL) of samples and
reference with their largest difference.

    python benchmarks/evaluate_model.py --references references/capped_2aa --out runs/eval \\
        [--model default] [--metropolis] [--timestep PS] [--peptides AA VD QW YF] [--chains 8] [--steps 10000]

References are ``jamun md`` directories named by sequence (``references/capped_2aa`` in the
repository holds those of the model card). JS distances are in base e, as the JAMUN paper's.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

from openmm_jamun.analysis.report import analyze, load_heavy
from openmm_jamun.records import read_json, write_json
from openmm_jamun.relax_run import relax_samples, relaxation_is_current
from openmm_jamun.sample import run_sampling

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BASIN_NAMES, basins, finished_walk  # noqa: E402


def sample(peptide, out, args):
    record = finished_walk(out, args.model, args.steps, chains=args.chains, timestep_ps=args.timestep)
    if record is not None and bool(record.get("metropolis")) == args.metropolis:
        return record  # this evaluation's walk, finished before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_sampling(peptide, out, model=args.model, steps=args.steps, chains=args.chains, seed=0,
                            threads=1, progress=False, overwrite=True, relax=False,
                            metropolis=args.metropolis or None, timestep_ps=args.timestep)


def basin_populations(run_dir, reference) -> dict:
    """φ/ψ basin populations per residue, samples and reference: {"phi/psi:1": {"samples": {...}, ...}}."""
    out = {}
    labels = {"samples": basins(load_heavy(run_dir)), "reference": basins(load_heavy(reference))}
    for key in labels["reference"]:
        if key.startswith("phi/psi"):
            out[key] = {which: {name: float(np.mean(labels[which][key] == index))
                                for index, name in enumerate(BASIN_NAMES["phi/psi"])} for which in labels}
    return out


def figures(run, result, reference_ns, populations) -> dict:
    """The figures of one peptide that the model card reports."""
    torsions, floor, jump = result["torsions"], result["reference_halves"], result["reference_jump"]
    # None: the autocorrelation never fell below 1/e within the run (analysis.json keeps no infinities)
    times = [value for key, value in result["decorrelation_frames"]["samples"].items()
             if key.split(":")[0] in ("phi", "psi")]
    decorrelation = None if None in times else max(times)
    samples = result["inputs"]["sample_frames"]
    return {
        "reference_ns": reference_ns,
        "samples": result["inputs"]["sample_frames"],
        "walk_wall_s": run["wall_time_s"],
        "backbone_jsd": torsions["mean_backbone_1d"],
        "sidechain_jsd": torsions["mean_sidechain_1d"],
        "phi_psi_jsd_2d": torsions["mean_phi_psi_2d"],
        "tic0_jsd": result["tica"]["jsd_tic0"],
        "msm_state_jsd": result["msm"]["jsd_states"],
        "outside_reference_states": result["msm"]["sample_outside_fraction"],
        "backbone_jsd_reference_floor": floor["mean_backbone_1d"],
        "jump_backbone_jsd": jump["torsions"]["mean_backbone_1d"],
        "walk_minus_jump_backbone_jsd": torsions["mean_backbone_1d"] - jump["torsions"]["mean_backbone_1d"],
        "valid_fraction": result["validity"]["valid_fraction"],
        # the raw jumps' chemistry: molecules that fell apart, D centres, non-trans peptide bonds
        "fell_apart_fraction": result["validity"]["fell_apart_fraction"],
        "d_centre_fraction": result["validity"]["failing_fraction"]["chirality"],
        "non_trans_fraction": result["validity"]["failing_fraction"]["peptide_bonds"],
        "relaxed_valid_fraction": result["relaxed"]["validity"]["valid_fraction"],
        "relaxed_backbone_jsd": result["relaxed"]["torsions"]["mean_backbone_1d"],
        "relaxation_s_per_walk_s": run["relaxation"]["wall_time_s"] / run["wall_time_s"],
        "jump_valid_fraction": jump["validity"]["valid_fraction"],
        "jump_rms_error_nm": jump["rms_error_nm"],
        "score_asymmetry": jump["score_asymmetry"]["mean"],
        "walk_ms_per_step": 1000 * run["wall_time_s"] / run["steps_done"],
        "acceptance_rate": run.get("acceptance", {}).get("rate"),
        "backbone_decorrelation_frames": decorrelation,
        "independent_samples_per_walk_s": None if decorrelation is None else samples / decorrelation / run["wall_time_s"],
        "basin_populations": populations,
        "largest_basin_error": max(abs(row["samples"][name] - row["reference"][name])
                                   for row in populations.values() for name in row["samples"]),
    }


def fmt(value, kind="f"):
    if value is None:
        return "n/a"
    return {"%": f"{100 * value:.0f}%", "%.2": f"{100 * value:.2f}%", "Å": f"{10 * value:.2f}",
            "0": f"{value:.0f}", "1": f"{value:.1f}"}.get(kind, f"{value:.2f}")


#: The model card's two tables: (column title, figure, format) per column.
WALK_COLUMNS = [
    ("backbone JSD", "backbone_jsd", "f"), ("reference floor", "backbone_jsd_reference_floor", "f"),
    ("side-chain JSD", "sidechain_jsd", "f"), ("φ/ψ JSD (2-D)", "phi_psi_jsd_2d", "f"), ("TIC0 JSD", "tic0_jsd", "f"),
    ("MSM-state JSD", "msm_state_jsd", "f"), ("outside reference states", "outside_reference_states", "%"),
    ("valid raw jumps", "valid_fraction", "%"), ("valid relaxed", "relaxed_valid_fraction", "%.2"),
    ("relaxed backbone JSD", "relaxed_backbone_jsd", "f"), ("relaxation / walk time", "relaxation_s_per_walk_s", "%")]
JUMP_COLUMNS = [
    ("jump of noised reference frames: backbone JSD", "jump_backbone_jsd", "f"),
    ("walk minus jump", "walk_minus_jump_backbone_jsd", "f"), ("valid jumps of noised frames", "jump_valid_fraction", "%"),
    ("jump RMS error (Å)", "jump_rms_error_nm", "Å"), ("score asymmetry", "score_asymmetry", "f")]
COST_COLUMNS = [
    ("walk ms/step", "walk_ms_per_step", "0"), ("Metropolis acceptance", "acceptance_rate", "%"),
    ("backbone decorrelation (frames)", "backbone_decorrelation_frames", "0"),
    ("independent samples per walk s", "independent_samples_per_walk_s", "1"),
    ("largest φ/ψ basin error", "largest_basin_error", "%")]


def markdown_table(rows: dict, columns) -> str:
    lines = ["| unseen | " + " | ".join(title for title, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for peptide, row in rows.items():
        lines.append(f"| {peptide} | " + " | ".join(fmt(row[key], kind) for _, key, kind in columns) + " |")
    return "\n".join(lines)


def print_tables(rows: dict) -> None:
    mean = {key: float(np.mean([row[key] for row in rows.values() if row[key] is not None]))
            for key in ("backbone_jsd", "jump_backbone_jsd", "walk_minus_jump_backbone_jsd")}
    print(markdown_table(rows, WALK_COLUMNS), end="\n\n")
    print(markdown_table(rows, JUMP_COLUMNS), end="\n\n")
    print(markdown_table(rows, COST_COLUMNS), end="\n\n")
    print("| unseen | residue | " + " | ".join(f"{name} samples / reference" for name in BASIN_NAMES["phi/psi"]) + " |")
    print("|---|---|" + "---|" * len(BASIN_NAMES["phi/psi"]))
    for peptide, row in rows.items():
        for key, populations in row["basin_populations"].items():
            print(f"| {peptide} | {key.split(':')[1]} | " + " | ".join(
                f"{fmt(populations['samples'][name], '%')} / {fmt(populations['reference'][name], '%')}"
                for name in BASIN_NAMES["phi/psi"]) + " |")
    print()
    print(f"mean backbone JSD {mean['backbone_jsd']:.3f}; of the jump alone {mean['jump_backbone_jsd']:.3f}; "
          f"walk minus jump {mean['walk_minus_jump_backbone_jsd']:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", required=True, help="directory of jamun md runs named by sequence")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--metropolis", action="store_true", help="the Metropolis-exact walk (energy models)")
    parser.add_argument("--timestep", type=float, default=None,
                        help="the walk's step in ps (default: JAMUN's δ = σ, 0.04 ps); a Metropolis walk of "
                             "several chains needs a fraction of it")
    parser.add_argument("--peptides", nargs="+", default=["AA", "VD", "QW", "YF"])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--relax-again", action="store_true",
                        help="relax the samples of existing runs again from the first frame (a relaxation made "
                             "another way is relaxed again anyway)")
    args = parser.parse_args()
    rows = {}
    start = time.time()
    for peptide in args.peptides:
        reference = os.path.join(args.references, peptide)
        if not os.path.isfile(os.path.join(reference, "md.json")):
            sys.exit(f"error: no reference MD for {peptide} in {args.references} (jamun md {peptide} --out {reference})")
        out = os.path.join(args.out, peptide)
        run = sample(peptide, out, args)
        stale = "relaxation" in run and not relaxation_is_current(run["relaxation"])
        if args.relax_again or stale or "relaxation" not in run or run["relaxation"]["frames"] < run["frames"]:
            relax_samples(out, threads=1, progress=False, restart=args.relax_again or stale)
            run = read_json(os.path.join(out, "run.json"))
        analysis = os.path.join(out, "analysis", "analysis.json")
        inputs = [os.path.join(out, "run.json")] + [os.path.join(reference, name) for name in ("md.json", "traj.xtc")]
        if os.path.isfile(analysis) and os.path.getmtime(analysis) > max(map(os.path.getmtime, inputs)):
            # this run's analysis against this reference, finished before an interruption (an extended
            # reference or a new run is analysed again)
            result = read_json(analysis)
        else:
            result = analyze(out, reference, os.path.join(out, "analysis"), model=args.model)
        rows[peptide] = figures(run, result, read_json(os.path.join(reference, "md.json"))["length_ns"],
                                basin_populations(out, reference))
        print(f"{peptide}: done ({time.time() - start:.0f} s)", flush=True)
    write_json(os.path.join(args.out, "evaluation.json"),
               {"model": args.model, "metropolis": args.metropolis, "timestep_ps": args.timestep,
                "chains": args.chains, "steps": args.steps,
                "jsd_base": "e", "peptides": rows})
    print_tables(rows)


if __name__ == "__main__":
    main()
