"""The ``jamun`` command line.

Each command imports what it needs when it runs: torch, openmm-torch and e3nn take seconds to
import, and ``jamun --help`` or ``jamun md`` need none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

from .platforms import BACKENDS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive; got {value}")
    return value


def _prepare_out(path: str, overwrite: bool) -> None:
    if os.path.exists(path) and os.listdir(path) and not overwrite:
        raise SystemExit(f"error: output directory {path} exists and is not empty (use --overwrite)")
    os.makedirs(path, exist_ok=True)


def _check_out_file(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the directory of {path} does not exist")


def cmd_demo(args) -> int:
    """Walk-jump on the analytic Gaussian denoiser: the 30-second check that everything is wired."""
    import numpy as np
    import torch
    from openmm import app, unit

    import openmm_jamun as oj

    torch.set_num_threads(1)
    _prepare_out(args.out, args.overwrite)
    s, sigma = 0.05, 0.04
    denoiser, topology, mu = oj.gaussian_example(args.particles, s=s * unit.nanometer, sigma=sigma * unit.nanometer)
    torch.jit.save(denoiser, os.path.join(args.out, "gaussian_denoiser.pt"))
    simulation = oj.create_walk_simulation(topology, mu, denoiser, backend=args.backend, seed=args.seed)
    with open(os.path.join(args.out, "topology.pdb"), "w") as handle:
        app.PDBFile.writeFile(simulation.topology, mu, handle)
    jumps = os.path.join(args.out, "jumps.dcd")
    simulation.reporters += [
        oj.JumpReporter(jumps, args.interval),
        app.DCDReporter(os.path.join(args.out, "walk.dcd"), args.interval),
        app.StateDataReporter(os.path.join(args.out, "log.csv"), args.interval * 10, step=True, speed=True),
    ]
    start = time.time()
    simulation.step(args.steps)
    elapsed = time.time() - start
    simulation.reporters[0].close()

    import mdtraj

    x = mdtraj.load(jumps, top=os.path.join(args.out, "topology.pdb")).xyz - mu.value_in_unit(unit.nanometer)
    print(f"{args.steps} steps in {elapsed:.1f} s ({args.steps / elapsed:.0f} steps/s), "
          f"{len(x)} clean frames -> {jumps}")
    print(f"jump variance {np.var(x):.3e} nm^2 (theory s^4/(s^2+sigma^2) = {s**4 / (s**2 + sigma**2):.3e})")
    return 0


def cmd_md(args) -> int:
    from openmm import unit

    from .data.md import run_md

    record = run_md(args.peptide, args.out, ns=args.ns, caps=not args.uncapped, seed=args.seed,
                    platform=args.platform, threads=args.threads, trajectory_atoms=args.atoms,
                    equilibration=None if args.equilibration_ps is None else args.equilibration_ps * unit.picosecond)
    print(f"{record['length_ns']} ns of {record['name']} in {record['wall_time_s']} s "
          f"({record['ns_per_day']} ns/day) -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig.from_file(args.config)
    if args.out:
        config.out = args.out
    if args.max_steps:
        config.max_steps = args.max_steps
    summary = train(config, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def cmd_sample(args) -> int:
    from .sample import metad_settings, run_sampling

    metad = metad_settings(args.metad, bias_factor=args.bias_factor, height_kj_per_mol=args.metad_height,
                           width_rad=args.metad_width, deposit_interval=args.metad_interval)
    record = run_sampling(args.input, args.out, model=args.model, steps=args.steps, chains=args.chains,
                          interval=args.interval, write_walk=args.walk, resume=args.resume,
                          overwrite=args.overwrite, platform=args.platform, threads=args.threads,
                          backend=args.backend, seed=args.seed, progress=not args.quiet, relax=not args.raw,
                          implicit=args.implicit, metropolis=args.metropolis, metad=metad,
                          timestep_ps=args.timestep)
    print(f"{record['frames']} clean frames x {record['chains']} chain(s) of {record['name']} in "
          f"{record['wall_time_s']} s ({record['steps_per_s']} steps/s); raw jumps valid {record['validity']['valid_fraction']:.1%} "
          f"-> {args.out}/samples.dcd"
          + (f", {record['ramachandran']}" if record.get("ramachandran") else ""))
    if "acceptance" in record:
        acceptance = record["acceptance"]
        print(f"Metropolis acceptance {acceptance['rate']:.1%} ({acceptance['accepted']} of {acceptance['proposed']} "
              f"steps at {record['timestep_ps'] or record['sigma_nm']:g} ps)")  # JAMUN's default step is σ in ps
    if "metadynamics" in record:
        bias = record["metadynamics"]
        print(f"metadynamics on {record['metad']['torsions']}: {bias['deposits']} depositions; weights of every frame -> "
              f"{args.out}/weights.csv (effective sample size {bias['effective_sample_size']:.0f}"
              + ("" if bias["exact"] else "; approximate: a direct model's walk has no energy") + ")")
    if "relaxation" in record:
        _print_relaxation(record["relaxation"], args.out)
    return 0


def _print_relaxation(relaxation: dict, out: str) -> None:
    raw, relaxed = relaxation["raw"], relaxation["relaxed"]
    failing = ", ".join(f"{check} {fraction:.1%}" for check, fraction in relaxed["failing_fraction"].items() if fraction)
    print(f"relaxed all-atom samples -> {out}/relaxed.dcd ({out}/relaxed_topology.pdb): valid {relaxed['valid_fraction']:.1%}"
          f" (raw jumps {raw['valid_fraction']:.1%}){'; failing: ' + failing if failing else ''}; heavy atoms moved "
          f"{10 * relaxation['mean_rms_shift_nm']:.2f} Å RMS"
          + (f"; {relaxation['planar_centres_finished']} nearly planar CA(s) on the D side finished L"
             if relaxation.get("planar_centres_finished") else ""))


def cmd_relax(args) -> int:
    from .relax_run import relax_samples

    relaxation = relax_samples(args.run, implicit=args.implicit, batch_size=args.batch, threads=args.threads,
                               progress=not args.quiet, restart=args.restart)
    _print_relaxation(relaxation, args.run)
    return 0


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cmd_analyze(args) -> int:
    from .analysis.report import analyze

    result = analyze(args.samples, args.reference, args.out, lag=args.lag, states=args.states, top=args.top,
                     model=args.model, weights=args.weights)
    torsion, floor = result["torsions"], result["reference_halves"]
    print(f"JS distances (base e): phi/psi 2-D {_num(torsion['mean_phi_psi_2d'])}; backbone 1-D "
          f"{_num(torsion['mean_backbone_1d'])}; side-chain 1-D {_num(torsion['mean_sidechain_1d'])}; "
          f"TIC0 {_num(result['tica']['jsd_tic0'])}; states {_num(result['msm']['jsd_states'])} "
          f"({result['msm']['sample_outside_fraction']:.0%} of samples outside the reference's); "
          f"valid frames {result['validity']['valid_fraction']:.1%} -> {args.out}/analysis.json")
    print(f"the reference against itself (half vs half): phi/psi 2-D {_num(floor['mean_phi_psi_2d'])}; backbone 1-D "
          f"{_num(floor['mean_backbone_1d'])}; side-chain 1-D {_num(floor['mean_sidechain_1d'])}; "
          f"TIC0 {_num(floor['jsd_tic0'])}")
    if "relaxed" in result:
        relaxed = result["relaxed"]
        print(f"relaxed samples: backbone 1-D {_num(relaxed['torsions']['mean_backbone_1d'])} (raw "
              f"{_num(torsion['mean_backbone_1d'])}); phi/psi 2-D {_num(relaxed['torsions']['mean_phi_psi_2d'])}; "
              f"valid {relaxed['validity']['valid_fraction']:.1%} (raw {result['validity']['valid_fraction']:.1%}); "
              f"heavy atoms moved {10 * relaxed['rms_shift_nm']:.2f} A RMS")
    if "reference_jump" in result:
        jump = result["reference_jump"]
        print(f"jump of {jump['frames']} noised reference frames: phi/psi JSD {_num(jump['torsions']['mean_phi_psi_2d'])}; "
              f"backbone 1-D {_num(jump['torsions']['mean_backbone_1d'])}; valid frames "
              f"{jump['validity']['valid_fraction']:.1%}; RMS error {10 * jump['rms_error_nm']:.2f} A "
              f"(noise {10 * jump['noise_rms_nm']:.2f} A); score asymmetry |D-D^T|/|D+D^T| "
              f"{jump['score_asymmetry']['mean']:.3f} (0 for a gradient field)")
    return 0


def cmd_export(args) -> int:
    import torch

    from .inputs import read_input
    from .model.registry import denoiser_for, model_card, resolve_model, warn_if_untrained

    topology, _, name = read_input(args.input)
    model_path = resolve_model(args.model)
    warn_if_untrained(model_path, model_card(model_path), topology)
    module = denoiser_for(model_path, topology, args.chains)
    _check_out_file(args.out)
    torch.jit.save(module, args.out)
    print(f"TorchScript denoiser for {name} ({module.num_atoms} atoms, {args.chains} chain(s)) -> {args.out}")
    return 0


def cmd_release(args) -> int:
    from .model.export import write_release

    _check_out_file(args.out)
    extra = json.loads(open(args.card).read()) if args.card else {}
    card = write_release(args.checkpoint, args.out, extra)
    print(f"released {args.out} ({card['parameters']} parameters, best validation loss "
          f"{card.get('best_val_loss')}) with its card")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jamun", description="JAMUN walk-jump sampling in OpenMM")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="walk-jump on the analytic Gaussian denoiser; writes clean frames")
    demo.add_argument("--out", default="jamun-demo", help="output directory (default jamun-demo)")
    demo.add_argument("--steps", type=_positive_int, default=5000, help="walk steps (default 5000)")
    demo.add_argument("--interval", type=_positive_int, default=10, help="steps between clean frames (default 10)")
    demo.add_argument("--particles", type=_positive_int, default=30, help="particles (default 30)")
    demo.add_argument("--backend", choices=BACKENDS, default="auto",
                      help="force backend (default auto)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    demo.set_defaults(func=cmd_demo)

    md = sub.add_parser("md", help="reference MD (amber14 + GBn2, 300 K) of a peptide; resumable")
    md.add_argument("peptide", help="one-letter sequence (capped with ACE/NME unless --uncapped) or a PDB file")
    md.add_argument("--ns", type=_positive_float, default=10.0,
                    help="production length in ns (default 10); more than a finished run's extends it")
    md.add_argument("--out", required=True, help="output directory (traj.xtc, topology.pdb, md.json, md.chk)")
    md.add_argument("--uncapped", action="store_true", help="zwitterionic termini instead of ACE/NME caps")
    md.add_argument("--atoms", choices=["all", "heavy"], default=None,
                    help="atoms in traj.xtc (default all; heavy: what a JAMUN model trains on, about 30%% smaller)")
    md.add_argument("--seed", type=int, default=None,
                    help="seed of the velocities and the thermostat (default 0; a resumed run keeps its own)")
    md.add_argument("--platform", default=None, help="OpenMM platform (default CPU)")
    md.add_argument("--threads", type=_positive_int, default=None,
                    help="CPU threads (default: all; the same seed gives the same frames on one thread only)")
    md.add_argument("--equilibration-ps", type=_positive_float, default=None,
                    help="equilibration before the first frame (default 100 ps; a resumed run keeps its own)")
    md.set_defaults(func=cmd_md)

    sa = sub.add_parser("sample", help="walk-jump sampling of a peptide with a trained model (the main job)")
    sa.add_argument("input", help="one-letter sequence (built as ACE-...-NME) or a PDB/PDBx file of one peptide")
    # None: the default for a new run, the run's own setting for --resume (a different one is an error)
    sa.add_argument("--model", default=None, help="'default' (the shipped capped_2aa; the default), a shipped model's name, "
                    "a training checkpoint or a TorchScript export")
    sa.add_argument("--steps", type=_positive_int, default=10000,
                    help="total walk steps, counting those of the run being resumed (default 10000)")
    sa.add_argument("--chains", type=_positive_int, default=None, help="independent walks in one System (default 1)")
    sa.add_argument("--interval", type=_positive_int, default=None, help="steps between clean frames (default 10)")
    sa.add_argument("--out", required=True, help="output directory")
    sa.add_argument("--walk", action="store_true", default=None, help="also write the noisy walk (walk.dcd)")
    sa.add_argument("--resume", action="store_true",
                    help="continue a run from its checkpoint, with the settings in its run.json")
    sa.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    sa.add_argument("--platform", default=None, help="OpenMM platform: CPU (the default), CUDA, Reference")
    sa.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for OpenMM and torch (default 1)")
    sa.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="JamunForce through openmm-torch (torch) or openmm.PythonForce (python); auto: torch "
                         "where openmm-torch imports")
    sa.add_argument("--seed", type=int, default=None, help="seed of the initial noise and the walk (default 0)")
    sa.add_argument("--metad", default=None, metavar="TORSIONS",
                    help="well-tempered metadynamics on 1-3 torsions of the walk, one bias shared by every "
                         "chain, e.g. phi:1,psi:1 (residue indices as jamun analyze names them; ACE is 0); "
                         "writes bias.npz and weights.csv, which jamun analyze uses")
    sa.add_argument("--bias-factor", type=float, default=None, help="metadynamics bias factor (default 3)")
    sa.add_argument("--metad-height", type=float, default=None, help="initial Gaussian height, kJ/mol (default 0.25)")
    sa.add_argument("--metad-width", type=float, default=None, help="Gaussian width, radians (default 0.5)")
    sa.add_argument("--metad-interval", type=_positive_int, default=None,
                    help="steps between depositions (default 100)")
    sa.add_argument("--metropolis", action="store_true", default=None,
                    help="Metropolis-exact walk (GHMC): samples exp(-E) at any step size; needs an energy-parametrised "
                         "model (an error for a direct one); the acceptance rate goes to log.csv and run.json")
    sa.add_argument("--timestep", type=_positive_float, default=None, metavar="PS",
                    help="walk step in ps (default: JAMUN's δ = σ, 0.04 ps); a Metropolis walk of many chains needs "
                         "a smaller one to keep its acceptance (benchmarks/metropolis_acceptance.py)")
    sa.add_argument("--raw", action="store_true",
                    help="keep the raw jumps only (heavy atoms); by default the samples are also relaxed into "
                         "all-atom frames, relaxed.dcd")
    sa.add_argument("--implicit", choices=("gbn2",), default=None,
                    help="relax in GBn2 implicit solvent instead of vacuum (slower)")
    sa.add_argument("--quiet", action="store_true", help="no progress bar")
    sa.set_defaults(func=cmd_sample)

    rx = sub.add_parser("relax", help="relax a sample run's jumps into all-atom frames (relaxed.dcd); resumable")
    rx.add_argument("run", help="a `jamun sample` output directory")
    rx.add_argument("--implicit", choices=("gbn2",), default=None, help="GBn2 implicit solvent instead of vacuum")
    rx.add_argument("--batch", type=_positive_int, default=None,
                    help="molecules minimised together (default 64; a resumed relaxation keeps its own)")
    rx.add_argument("--threads", type=_positive_int, default=1, help="CPU threads (default 1)")
    rx.add_argument("--restart", action="store_true",
                    help="relax every frame again, replacing relaxed.dcd (instead of resuming)")
    rx.add_argument("--quiet", action="store_true", help="no progress bar")
    rx.set_defaults(func=cmd_relax)

    an = sub.add_parser("analyze", help="compare samples with reference MD: torsion JSDs, TICA, MSM states, plots")
    an.add_argument("samples", help="a `jamun sample` output dir, or a trajectory file with --top")
    an.add_argument("--reference", required=True, help="a `jamun md` output dir")
    an.add_argument("--top", default=None, help="topology for a bare samples trajectory")
    an.add_argument("--weights", default=None,
                    help="a metadynamics run's weights.csv for a bare samples trajectory (a run directory's own "
                         "weights.csv is used without it)")
    an.add_argument("--out", default=None, help="where to write analysis.json and plots (default: SAMPLES/analysis)")
    an.add_argument("--lag", type=_positive_int, default=10, help="TICA and MSM lag, in reference frames")
    an.add_argument("--states", type=_positive_int, default=4, help="PCCA+ metastable states")
    an.add_argument("--model", default=None,
                    help="also jump sigma-noised reference frames with this model ('default', a shipped model's name, a "
                         "checkpoint or a one-chain export): the denoiser's error apart from the walk's")
    an.set_defaults(func=cmd_analyze)

    ex = sub.add_parser("export", help="TorchScript denoiser for one peptide (K chains), e.g. for JamunForce")
    ex.add_argument("input", help="one-letter sequence or PDB/PDBx file")
    ex.add_argument("--model", default="default", help="as for sample (default: the shipped model)")
    ex.add_argument("--chains", type=_positive_int, default=1, help="copies of the molecule (default 1)")
    ex.add_argument("--out", required=True, help="the TorchScript file to write")
    ex.set_defaults(func=cmd_export)

    rl = sub.add_parser("release", help="ship a training checkpoint as a model (weights only) with its JSON card")
    rl.add_argument("checkpoint")
    rl.add_argument("--out", required=True, help="e.g. openmm_jamun/models/NAME.pt (the card goes beside it)")
    rl.add_argument("--card", default=None, help="JSON file of extra card fields (evaluation, hardware, ...)")
    rl.set_defaults(func=cmd_release)

    tr = sub.add_parser("train", help="train a denoiser from a JSON config (torchrun-able for DDP)")
    tr.add_argument("config", help="JSON file with TrainConfig fields (see examples/train_capped_2aa.json)")
    tr.add_argument("--out", default=None, help="override the config's output directory")
    tr.add_argument("--max-steps", type=_positive_int, default=None, help="override the config's max_steps")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    # a command line user needs the message, not the source line that raised it
    return f"warning: {message}\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    if args.command == "analyze" and args.out is None:
        args.out = os.path.join(args.samples if os.path.isdir(args.samples) else ".", "analysis")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # bad input (or an unusable platform or path): the message, not a traceback
        from openmm import OpenMMException

        if not isinstance(error, (ValueError, OSError, OpenMMException)):
            raise
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
