"""Restrained all-atom relaxation of sampled heavy-atom frames: cost, validity, and whether it moves the ensemble.

Input: a `jamun sample` run dir (samples.dcd + topology.pdb; K chains pooled) or a trajectory with
--top. Prints, and writes as JSON with --json:

* cost: wall and CPU milliseconds per frame on one thread at each batch size (--batch-sizes; the
  Contexts of each size and of its later, smaller stages are built before timing, as a long
  relaxation keeps them);
* validity (openmm_jamun.analysis.validity) of the raw and the relaxed frames, and which checks
  fail; of the reference too when one is given (what the definition says of real MD); how far the
  raw frames' CA centres on the D side are from planar (nearly planar ones are finished L);
* heavy-atom RMS shift of the relaxation;
* for a run dir: what relaxing every frame adds to the run's wall time (``jamun sample``'s default
  against ``--raw``), from the statistics run's rate;
* torsion Jensen-Shannon distances: relaxed vs raw, and raw and relaxed vs a --reference (a
  `jamun md` dir or trajectory): the relaxation must not move the ensemble;
* GBn2 MD from --md-frames relaxed frames (--md-ps each, 2 fs, HBonds, 300 K): a relaxed frame
  must start MD without a constraint failure or a blow-up.

    python benchmarks/relaxation.py runs/eval/VD --reference references/capped_2aa/VD [--torsion-restraint 0]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from openmm import unit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openmm_jamun.analysis.report import load_heavy  # noqa: E402
from openmm_jamun.analysis.torsions import torsion_jsds  # noqa: E402
from openmm_jamun.analysis.validity import (CHECKS, ValidityChecker, _dihedrals, frame_validity,  # noqa: E402
                                            validity_summary)
from openmm_jamun.relax import MIRRORED_IMPROPER_DEG, Relaxer  # noqa: E402


def evenly_spaced(traj, count):
    return traj[np.unique(np.linspace(0, traj.n_frames - 1, min(count, traj.n_frames)).astype(int))]


def time_batches(relaxer, frames, batch_sizes, timing_frames):
    rows = []
    for size in batch_sizes:
        relaxer.batch_size = size
        count = max(size, timing_frames) if size > 1 else min(timing_frames, 64)
        subset = frames[np.arange(count) % len(frames)]
        relaxer.relax(subset)  # builds the Contexts of this batch size and of its later stages, as a long run keeps them
        wall, cpu = time.perf_counter(), time.process_time()
        relaxer.relax(subset)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append({"batch": size, "frames": int(count), "wall_ms_per_frame": 1e3 * wall / count,
                     "cpu_ms_per_frame": 1e3 * cpu / count})
        print(f"  batch {size:4d}: {rows[-1]['wall_ms_per_frame']:7.2f} ms/frame wall, "
              f"{rows[-1]['cpu_ms_per_frame']:7.2f} ms/frame CPU ({count} frames)", flush=True)
    return rows


def md_check(result, count, picoseconds, seed=0):
    """GBn2 MD (amber14, HBonds, 2 fs, Langevin 300 K) of ``picoseconds`` from ``count`` valid relaxed frames."""
    import openmm
    from openmm import app, unit

    from openmm_jamun.data.build import forcefield

    valid = np.nonzero(result.valid)[0]
    chosen = valid[np.unique(np.linspace(0, len(valid) - 1, min(count, len(valid))).astype(int))]
    system = forcefield().createSystem(result.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    steps = int(round(picoseconds / 0.002))
    bonds = np.array([(a.index, b.index) for a, b in result.topology.bonds()])
    outcomes = []
    start = time.perf_counter()
    for k in chosen:
        context.setPositions(result.positions[k] * unit.nanometer)
        context.setVelocitiesToTemperature(300 * unit.kelvin, seed + int(k))
        try:
            integrator.step(steps)
            state = context.getState(getPositions=True, getEnergy=True)
            x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            longest = float(np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1).max())
            ok = bool(np.isfinite(energy) and longest < 0.2)
            outcomes.append({"frame": int(k), "ok": ok, "final_energy_kj_per_mol": float(energy),
                             "longest_bond_nm": longest})
        except openmm.OpenMMException as error:  # a constraint failure or NaN
            outcomes.append({"frame": int(k), "ok": False, "error": str(error)})
    return {"frames": len(chosen), "ps_each": picoseconds, "passed": int(sum(o["ok"] for o in outcomes)),
            "wall_s": time.perf_counter() - start, "runs": outcomes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("samples", help="a `jamun sample` run dir, or a trajectory file with --top")
    parser.add_argument("--top", help="topology for a bare trajectory file")
    parser.add_argument("--reference", help="reference MD (a `jamun md` dir or trajectory) for torsion JSDs")
    parser.add_argument("--reference-top")
    parser.add_argument("--frames", type=int, default=1000, help="frames relaxed for the statistics (evenly spaced)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--timing-frames", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64, help="batch size of the statistics run")
    parser.add_argument("--implicit", default=None, help="relax with this implicit solvent (gbn2); default vacuum")
    parser.add_argument("--torsion-restraint", type=float, default=None, metavar="KJ_PER_MOL_RAD2",
                        help="φ/ψ/χ restraint constant (default the Relaxer's, 300; 0: position restraints only)")
    parser.add_argument("--md-frames", type=int, default=20)
    parser.add_argument("--md-ps", type=float, default=10.0)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    raw_all = load_heavy(args.samples, args.top)
    raw = evenly_spaced(raw_all, args.frames)
    frames = raw.xyz.astype(np.float64)
    first = int(np.nonzero(np.isfinite(frames).all(axis=(1, 2)))[0][0])
    kwargs = {} if args.torsion_restraint is None else {
        "torsion_restraint_k": args.torsion_restraint * unit.kilojoule_per_mole / unit.radian**2}
    relaxer = Relaxer(raw.topology, frames[first], implicit=args.implicit, batch_size=args.batch, **kwargs)
    out = {"input": args.samples, "frames": int(raw.n_frames), "heavy_atoms": int(raw.n_atoms),
           "all_atoms": relaxer.n_atoms, "settings": relaxer.settings()}
    print(f"{args.samples}: {raw.n_frames} frames of {raw.n_atoms} heavy atoms ({relaxer.n_atoms} with hydrogens); "
          f"force field {'+'.join(relaxer.force_field_files)}", flush=True)

    print("cost (one thread):", flush=True)
    out["timing"] = time_batches(relaxer, frames, args.batch_sizes, args.timing_frames)

    relaxer.batch_size = args.batch
    start = time.perf_counter()
    result = relaxer.relax(frames)
    out["relax_wall_s"] = time.perf_counter() - start
    raw_validity = validity_summary(frame_validity(raw))
    relaxed_validity = validity_summary(result.validity)
    out["validity"] = {"raw": raw_validity, "relaxed": relaxed_validity}
    reasons = {}
    for reason in result.reasons:
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    out["relaxed_failure_reasons"] = reasons
    out["released_restraints"] = {"frames": int((result.released_atoms > 0).sum()),
                                  "atoms": int(result.released_atoms.sum())}
    shift = result.rms_shift_nm[np.isfinite(result.rms_shift_nm)]
    out["rms_shift_nm"] = {"mean": float(shift.mean()), "median": float(np.median(shift)),
                           "max": float(shift.max())}

    def failing(summary):
        return ", ".join(f"{c} {100 * summary['failing_fraction'][c]:.1f}%" for c in CHECKS)

    print(f"valid: raw {100 * raw_validity['valid_fraction']:.2f}%  ->  relaxed "
          f"{100 * relaxed_validity['valid_fraction']:.2f}%  (batch {args.batch}, {out['relax_wall_s']:.1f} s)")
    print(f"  raw failing:     {failing(raw_validity)}")
    print(f"  relaxed failing: {failing(relaxed_validity)}; reasons {reasons}; "
          f"restraints released in {out['released_restraints']['frames']} frames")
    # every raw frame's CA centres on the D side, and how far: nearly planar ones are finished L
    quartets = ValidityChecker(raw_all.topology, frames[first]).chiral_quads[:, [1, 0, 2, 3]]
    improper = np.degrees(_dihedrals(raw_all.xyz.astype(np.float64), quartets)) if len(quartets) else np.zeros(0)
    d_side, l_side = np.sort(improper[improper < 0]), improper[improper > 0]
    out["raw_d_side_centres"] = {"centres": int(improper.size), "d_side": int(d_side.size),
                                 "nearly_planar": int((d_side >= -MIRRORED_IMPROPER_DEG).sum()),
                                 "improper_deg_min": float(d_side[0]) if d_side.size else None,
                                 "l_improper_deg_median": float(np.median(l_side)) if l_side.size else None}
    if improper.size:
        print(f"  raw CA centres on the D side (all {raw_all.n_frames} frames): {d_side.size} of {improper.size}"
              + (f", {out['raw_d_side_centres']['nearly_planar']} within {MIRRORED_IMPROPER_DEG:g}° of planar "
                 f"(finished L), the furthest {d_side[0]:.1f}°" if d_side.size else "")
              + (f"; L centres' median improper {np.median(l_side):.1f}°" if l_side.size else "")
              + f"; finished L in these {len(frames)} frames: {int(result.planar_centres_finished.sum())}")
    run_record = os.path.join(args.samples, "run.json")
    if os.path.isfile(run_record):  # a sample run: what relaxing all of its frames adds to its wall time
        with open(run_record) as handle:
            run = json.load(handle)
        frames_in_run = int(run["frames"]) * int(run["chains"])
        relax_s = out["relax_wall_s"] / len(frames) * frames_in_run
        out["sample_cost"] = {"walk_wall_s": run["wall_time_s"], "frames": frames_in_run,
                              "relaxation_wall_s_estimate": relax_s,
                              "relaxed_over_raw": 1 + relax_s / run["wall_time_s"]}
        print(f"jamun sample with relaxation / raw: {out['sample_cost']['relaxed_over_raw']:.2f}x (walk "
              f"{run['wall_time_s']:.0f} s for {frames_in_run} frames; relaxing them at this batch's rate "
              f"{relax_s:.0f} s)")
    print(f"heavy-atom RMS shift: mean {10 * out['rms_shift_nm']['mean']:.3f} Å, median "
          f"{10 * out['rms_shift_nm']['median']:.3f} Å, max {10 * out['rms_shift_nm']['max']:.3f} Å")

    finite = np.isfinite(result.positions).all(axis=(1, 2))
    relaxed_heavy = raw[np.nonzero(finite)[0]]
    relaxed_heavy.xyz = result.positions[finite][:, relaxer.heavy_atom_indices].astype(np.float32)
    self_jsd = torsion_jsds(relaxed_heavy, raw[np.nonzero(finite)[0]])
    out["torsions_relaxed_vs_raw"] = {k: self_jsd[k] for k in ("mean_backbone_1d", "mean_sidechain_1d",
                                                               "mean_phi_psi_2d")}
    from openmm_jamun.analysis.torsions import torsions

    before, after = torsions(raw[np.nonzero(finite)[0]]), torsions(relaxed_heavy)
    change = {key: float(np.degrees(np.mean(np.abs(np.angle(np.exp(1j * (after[key] - before[key])))))))
              for key in sorted(before)}
    out["torsion_change_deg"] = {"mean_abs_per_torsion": change}
    print(f"torsion JSD relaxed vs raw: backbone 1-D {self_jsd['mean_backbone_1d']:.4f}, "
          f"φ/ψ 2-D {self_jsd['mean_phi_psi_2d']:.4f}; mean |Δ| per torsion (°): "
          + ", ".join(f"{k} {v:.1f}" for k, v in change.items()))
    if args.reference:
        reference = load_heavy(args.reference, args.reference_top)
        out["reference_validity"] = validity_summary(frame_validity(reference))
        raw_jsd, relaxed_jsd = torsion_jsds(raw, reference), torsion_jsds(relaxed_heavy, reference)
        keys = ("mean_backbone_1d", "mean_sidechain_1d", "mean_phi_psi_2d")
        out["torsions_vs_reference"] = {"reference": args.reference, "reference_frames": int(reference.n_frames),
                                        "raw": {k: raw_jsd[k] for k in keys},
                                        "relaxed": {k: relaxed_jsd[k] for k in keys}}
        print(f"vs reference ({reference.n_frames} frames): backbone 1-D JSD raw {raw_jsd['mean_backbone_1d']:.4f}, "
              f"relaxed {relaxed_jsd['mean_backbone_1d']:.4f} (Δ {relaxed_jsd['mean_backbone_1d'] - raw_jsd['mean_backbone_1d']:+.4f}); "
              f"φ/ψ 2-D raw {raw_jsd['mean_phi_psi_2d']:.4f}, relaxed {relaxed_jsd['mean_phi_psi_2d']:.4f}")
        print(f"  the reference itself under the validity definition: "
              f"{100 * out['reference_validity']['valid_fraction']:.2f}% valid; failing "
              f"{failing(out['reference_validity'])}")

    if args.md_frames > 0:
        out["gbn2_md"] = md_check(result, args.md_frames, args.md_ps)
        md = out["gbn2_md"]
        print(f"GBn2 MD, {md['ps_each']:g} ps from each of {md['frames']} relaxed frames: {md['passed']}/{md['frames']} "
              f"ran without a constraint failure or blow-up ({md['wall_s']:.0f} s)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)


if __name__ == "__main__":
    main()
