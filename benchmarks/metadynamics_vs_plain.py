"""Metadynamics on the walk against the plain walk, at equal steps and wall time.

For one peptide: a plain walk and a well-tempered metadynamics walk (one bias shared by the K
chains, `jamun sample --metad`), the same model, chains, seed and steps, each written to OUT. For
growing prefixes of each run (in steps and wall seconds) it prints:

* the JS distance (base e, mean over backbone and side-chain torsions, 1-D) of the samples —
  reweighted for the metadynamics run — to the model's own long plain walk (`--long`, a finished
  `jamun sample` run: the sampler's error apart from the model's) and to the reference MD, and the
  mean 1-D JS distance of the biased torsions alone to the long walk;
* whether the metadynamics run, at a fifth of its length, is as close to the long walk as the plain
  run at its full length (both JS distances), and the ratio of their wall times;
* how many of the reference's basins (φ/ψ: αR, β/PPII, αL per residue; χ1: g+, t, g− per side
  chain; a basin counts when the reference puts ≥ 1% there) the run has visited, and the first step
  at which it had visited them all;
* the share of raw jumps that fell apart (`analysis.validity`);
* the long plain walk's decorrelation time of each torsion, in steps (`jamun analyze`'s: the lag
  where the autocorrelation of its sin or cos first drops below 1/e, within chains). Where the
  slowest is a small part of the run, the plain walk is not waiting for a rare transition and a bias
  cannot shorten it much: what is left of its error is sampling noise, which reweighting enlarges.

    python benchmarks/metadynamics_vs_plain.py VD --reference references/capped_2aa/VD --long runs/eval/VD \\
        --torsions chi1:2,psi:1 --steps 3000 --chains 8 --out runs/metad-VD
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openmm_jamun.analysis.ensemble import torsion_decorrelation  # noqa: E402
from openmm_jamun.analysis.report import load_heavy, sample_weights  # noqa: E402
from openmm_jamun.analysis.torsions import torsion_jsds  # noqa: E402
from openmm_jamun.analysis.validity import ValidityChecker, frame_validity, validity_summary  # noqa: E402
from openmm_jamun.records import read_json  # noqa: E402
from openmm_jamun.sample import METAD_DEFAULTS, metad_settings, run_sampling  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import basins, finished_walk  # noqa: E402

FRACTIONS = (0.1, 0.2, 0.5, 1.0)


def run(peptide, out, args, metad):
    """The walk in ``out``: a finished one with the same settings is reused, anything else replaced."""
    record = finished_walk(out, args.model, args.steps, chains=args.chains, seed=args.seed, metad=metad)
    if record is not None:
        return record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_sampling(peptide, out, model=args.model, steps=args.steps, chains=args.chains, seed=args.seed,
                            threads=1, progress=False, overwrite=True, relax=False, plot=False, metad=metad)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peptide")
    parser.add_argument("--reference", required=True, help="reference MD (a `jamun md` dir)")
    parser.add_argument("--long", required=True, help="the model's long plain walk (a `jamun sample` run dir)")
    parser.add_argument("--torsions", default="phi:1,psi:1")
    parser.add_argument("--bias-factor", type=float, default=METAD_DEFAULTS["bias_factor"])
    parser.add_argument("--height", type=float, default=METAD_DEFAULTS["height_kj_per_mol"], help="kJ/mol")
    parser.add_argument("--width", type=float, default=METAD_DEFAULTS["width_rad"], help="radians")
    parser.add_argument("--deposit-interval", type=int, default=METAD_DEFAULTS["deposit_interval"])
    parser.add_argument("--angle-switch", type=float, default=METAD_DEFAULTS["angle_switch"],
                        help="s0 of the torsion bias's bond-angle switch (0: none)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--which", choices=("plain", "metad", "both"), default="both",
                        help="run one kind only (two processes can run the two side by side)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    metad = metad_settings(args.torsions, bias_factor=args.bias_factor, height_kj_per_mol=args.height,
                           width_rad=args.width, deposit_interval=args.deposit_interval,
                           angle_switch=args.angle_switch)
    kinds = {"plain": None, "metad": metad}
    records = {kind: run(args.peptide, os.path.join(args.out, kind), args, setting)
               for kind, setting in kinds.items() if args.which in (kind, "both")}
    if args.which != "both":
        return

    reference, long_walk = load_heavy(args.reference), load_heavy(args.long)
    long_interval = int(read_json(os.path.join(args.long, "run.json"))["interval"])
    decorrelation_steps = {key: value * long_interval for key, value in torsion_decorrelation(long_walk).items()}
    reference_basins = basins(reference)
    visited_by_reference = {key: {b for b in np.unique(v) if np.mean(v == b) >= 0.01}
                            for key, v in reference_basins.items()}
    wanted = sum(len(v) for v in visited_by_reference.values())
    biased = metad["torsions"].split(",")
    results = {}
    for kind, record in records.items():
        directory = os.path.join(args.out, kind)
        samples = load_heavy(directory)  # chains pooled: chain 0's frames, then chain 1's, ...
        frames, chains = int(record["frames"]), int(record["chains"])
        weights = sample_weights(directory, samples.n_frames)
        start = samples.xyz[0]
        checker = ValidityChecker(samples.topology, start)
        validity = validity_summary(frame_validity(samples, checker=checker))
        labels = basins(samples)
        first_all = None
        for f in range(1, frames + 1):  # the first frame count at which every reference basin was visited
            index = (np.arange(chains)[:, None] * frames + np.arange(f)[None]).ravel()
            seen = sum(len(wanted_basins & set(np.unique(labels[key][index])))
                       for key, wanted_basins in visited_by_reference.items())
            if seen == wanted:
                first_all = f * int(record["interval"])
                break
        rows = []
        for fraction in FRACTIONS:
            f = max(2, int(round(fraction * frames)))
            index = (np.arange(chains)[:, None] * frames + np.arange(f)[None]).ravel()
            w = None if weights is None else weights[index] / weights[index].sum()
            to_long = torsion_jsds(samples[index], long_walk, w)
            to_reference = torsion_jsds(samples[index], reference, w)

            def mean_jsd(result):
                values = [v for v in (result["mean_backbone_1d"], result["mean_sidechain_1d"]) if v is not None]
                return float(np.mean(values))

            rows.append({"steps": f * int(record["interval"]), "wall_s": fraction * record["wall_time_s"],
                         "jsd_to_long_walk": mean_jsd(to_long), "jsd_to_reference": mean_jsd(to_reference),
                         "biased_jsd_to_long_walk": float(np.mean([to_long["torsion_1d"][key] for key in biased]))})
        results[kind] = {"rows": rows, "steps_to_visit_every_reference_basin": first_all,
                         "reference_basins": wanted, "fell_apart_fraction": validity["fell_apart_fraction"],
                         "valid_raw_fraction": validity["valid_fraction"], "wall_time_s": record["wall_time_s"],
                         "effective_sample_size": None if weights is None else float(1 / np.sum(weights ** 2))}
    with open(os.path.join(args.out, "comparison.json"), "w") as handle:
        json.dump({"peptide": args.peptide, "metad": metad, "chains": args.chains, "results": results,
                   "long_walk_decorrelation_steps": decorrelation_steps}, handle, indent=2)
    print(f"{args.peptide}, {args.chains} chains, metadynamics on {metad['torsions']} (bias factor {args.bias_factor}); "
          f"JSD = mean of backbone and side-chain 1-D JS distances (base e)")
    print(f"{'run':<6}{'steps':>7}{'wall s':>9}{'JSD to long walk':>18}{'JSD to reference':>18}"
          f"{'biased torsions to long walk':>30}")
    for kind, result in results.items():
        for row in result["rows"]:
            print(f"{kind:<6}{row['steps']:>7}{row['wall_s']:>9.0f}{row['jsd_to_long_walk']:>18.3f}"
                  f"{row['jsd_to_reference']:>18.3f}{row['biased_jsd_to_long_walk']:>30.3f}")
    fifth = next(row for fraction, row in zip(FRACTIONS, results["metad"]["rows"]) if fraction == 0.2)
    full = results["plain"]["rows"][-1]
    for label, key in (("all torsions", "jsd_to_long_walk"), ("biased torsions", "biased_jsd_to_long_walk")):
        print(f"{label}: metadynamics at {fifth['steps']} steps ({fifth['wall_s'] / full['wall_s']:.2f} of the plain "
              f"walk's wall time) {fifth[key]:.3f} against the plain walk's {full[key]:.3f} at {full['steps']} steps: "
              + ("as close or closer" if fifth[key] <= full[key] else "further"))
    for kind, result in results.items():
        print(f"{kind}: every one of the reference's {result['reference_basins']} basins visited by step "
              f"{result['steps_to_visit_every_reference_basin']}; raw jumps fell apart "
              f"{result['fell_apart_fraction']:.2%}; effective sample size {result['effective_sample_size']}")
    print("the long plain walk's decorrelation times, steps: "
          + ", ".join(f"{key} {value:.0f}" for key, value in decorrelation_steps.items()))


if __name__ == "__main__":
    main()
