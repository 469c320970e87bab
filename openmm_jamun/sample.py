"""The main job: walk-jump sampling of a peptide with a trained model, into a run directory.

``run_sampling`` reads top to bottom as the run goes: settings (a new run's defaults, or a resumed
run's own), input and model checked before the output directory is touched, the walk built by
:func:`~openmm_jamun.simulation.create_walk_simulation`, OpenMM's reporters and a JumpReporter
attached, the steps run in chunks that Ctrl-C can stop between, then the samples checked and plotted.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import mdtraj
import numpy as np
import torch
from openmm import app, unit
from tqdm import tqdm

from .analysis.validity import FELL_APART_NM, ValidityChecker, frame_validity, validity_summary
from .analysis.plots import ramachandran
from .analysis.report import load_heavy
from .analysis.torsions import backbone_pairs, torsions
from .inputs import read_input
from .model.registry import denoiser_for, model_card, resolve_model, warn_if_untrained
from .relax_run import relax_samples, relaxation_is_current
from .records import CHECKPOINT, RUN, TOPOLOGY, RunFiles, check_same_settings, read_json, write_json
from .force import check_walk, find_score_module, force_has_energy
from .integrator import AcceptanceStateDataReporter, JamunIntegrator
from .metadynamics import (ANGLE_SWITCH, DEPOSIT_INTERVAL, TORSION_BIAS_FACTOR, TORSION_HEIGHT_KJ_PER_MOL,
                           TORSION_WIDTH_RAD, SharedBiasMetadynamics, parse_torsions, torsion_quartets)
from .reporter import JumpReporter
from .simulation import WalkSimulation, create_walk_simulation
from .trajectory import truncate_trajectory

#: What a run keeps when it is resumed, and the defaults of a new run.
RUN_SETTINGS = {"model": "default", "chains": 1, "interval": 10, "write_walk": False, "seed": 0, "platform": "CPU",
                "metropolis": False, "metad": None, "timestep_ps": None}
#: The defaults of a metadynamics run (``metad_settings``).
METAD_DEFAULTS = {"bias_factor": TORSION_BIAS_FACTOR, "height_kj_per_mol": TORSION_HEIGHT_KJ_PER_MOL,
                  "width_rad": TORSION_WIDTH_RAD, "deposit_interval": DEPOSIT_INTERVAL, "angle_switch": ANGLE_SWITCH}
#: Steps between the points where Ctrl-C may stop a run, in clean frames.
FRAMES_PER_CHUNK = 10


def _same_input(given: str, kept: str) -> bool:
    if os.path.isfile(given) or os.path.isfile(kept):
        return os.path.abspath(given) == os.path.abspath(kept)
    return given.upper() == kept.upper()


#: How a resumed run compares a setting given again with its own.
_SAME_SETTING = {
    "model": lambda given, kept: resolve_model(given).resolve() == Path(kept).resolve(),
    "platform": lambda given, kept: str(given).lower() == str(kept).lower(),
    "input": _same_input,
    # the options given with --metad; those not given are the run's own
    "metad": lambda given, kept: kept is not None and all(kept.get(k) == v for k, v in given.items() if v is not None),
}


def run_settings(source: str, out_path: Path, given: dict, resume: bool, overwrite: bool) -> tuple[dict, dict | None]:
    """(settings, the resumed run's record or None). ``given`` holds the caller's settings, None
    where not given: a new run takes :data:`RUN_SETTINGS` there, a resumed run its own, and a
    resumed run asked for another value (or another input) is an error."""
    if out_path.exists() and not out_path.is_dir():
        raise ValueError(f"output {out_path} is a file, not a directory")
    if not resume:
        if out_path.exists() and any(out_path.iterdir()) and not overwrite:
            raise FileExistsError(f"output directory {out_path} exists and is not empty (use --overwrite or --resume)")
        settings = {key: RUN_SETTINGS[key] if value is None else value for key, value in given.items()}
        return {**settings, "input": source}, None
    if not (out_path / CHECKPOINT).is_file():
        raise FileNotFoundError(f"cannot resume: no {CHECKPOINT} in {out_path}")
    record = read_json(out_path / RUN)
    check_same_settings(str(out_path), record, {**given, "input": source}, equal=_SAME_SETTING)
    return {key: record.get(key, RUN_SETTINGS.get(key)) for key in (*given, "input")}, record


def metad_settings(torsions: str | None, bias_factor: float | None = None, height_kj_per_mol: float | None = None,
                   width_rad: float | None = None, deposit_interval: int | None = None,
                   angle_switch: float | None = None) -> dict | None:
    """The ``metad`` setting of a run: None without ``torsions``, else the torsions (checked by
    :func:`~openmm_jamun.metadynamics.parse_torsions`) and every option, None where not given: a new
    run takes :data:`METAD_DEFAULTS` there, a resumed run its own. An option without torsions is an
    error. ``angle_switch`` is the bond-angle switch's s0 (0: none; a benchmark's option)."""
    options = {"bias_factor": bias_factor, "height_kj_per_mol": height_kj_per_mol, "width_rad": width_rad,
               "deposit_interval": deposit_interval, "angle_switch": angle_switch}
    if torsions is None:
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set the metadynamics bias: give the torsions to bias too (--metad)")
        return None
    names = parse_torsions(torsions)
    spec = ",".join(f"{kind}:{residue}" for kind, residue in names)
    for name, value, ok, rule in (("bias_factor", bias_factor, lambda v: v > 1, "> 1 (well-tempered)"),
                                  ("height_kj_per_mol", height_kj_per_mol, lambda v: v > 0, "> 0"),
                                  ("width_rad", width_rad, lambda v: v > 0, "> 0"),
                                  ("deposit_interval", deposit_interval, lambda v: int(v) == v and v >= 1,
                                   "a positive integer"),
                                  ("angle_switch", angle_switch, lambda v: v >= 0, ">= 0")):
        if value is not None and not ok(value):
            raise ValueError(f"metadynamics {name} must be {rule}; got {value}")
    return {"torsions": spec, **options}


def attach_metadynamics(simulation: WalkSimulation, settings: dict, interval: int) -> SharedBiasMetadynamics:
    """The run's shared-bias metadynamics on the walk, recorded at every clean frame (row i of the
    weights is frame i of the samples)."""
    metad = SharedBiasMetadynamics.for_torsions(
        simulation, settings["torsions"], width=settings["width_rad"] * unit.radian,
        bias_factor=settings["bias_factor"], height=settings["height_kj_per_mol"] * unit.kilojoule_per_mole,
        deposit_interval=settings["deposit_interval"], record_interval=interval,
        angle_switch=settings.get("angle_switch", 0.0))  # a run from before the switch had none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a direct model's reweighting is approximate: run.json says so ("exact")
        metad.add_to(simulation)
    return metad


@contextmanager
def _sigint_handled_by(handler):
    """Ctrl-C (SIGINT) goes to ``handler`` inside the block; yields the handler it replaced (Python's
    default where none was set from Python). Signal handlers belong to the main thread: elsewhere
    nothing changes."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, handler) if in_main_thread else None
    if previous is None:
        previous = signal.default_int_handler
    try:
        yield previous
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def save_checkpoint(simulation: WalkSimulation, files: RunFiles) -> None:
    """The walk's checkpoint and, for a metadynamics run, its bias first (a resumed run needs both).
    Ctrl-C during the writes is handed to the handler it would have reached once both are written,
    so they always belong together."""
    received = []
    with _sigint_handled_by(lambda signum, frame: received.append(signum)) as previous:
        metad = getattr(simulation, "metadynamics", None)
        if metad is not None:
            metad.save(files.bias)
        simulation.saveCheckpoint(files.checkpoint)
    if received and callable(previous):
        previous(signal.SIGINT, None)
    elif received and previous == signal.SIG_DFL:
        raise KeyboardInterrupt


class _CheckpointReporter:
    """OpenMM's CheckpointReporter, writing the bias of a metadynamics walk with the checkpoint."""

    def __init__(self, files: RunFiles, interval: int):
        self._files, self._interval = files, interval

    def describeNextReport(self, simulation):
        return {"steps": self._interval - simulation.currentStep % self._interval, "periodic": False, "include": []}

    def report(self, simulation, state):
        save_checkpoint(simulation, self._files)


def write_weights(metad: SharedBiasMetadynamics, path: str) -> dict:
    """``weights.csv``: one row per clean frame and chain (frame, chain, step, the bias V·S the walk
    felt there and c(t), kJ/mol, and the normalised weight), in the samples' order; returns the run
    record's summary."""
    weights = metad.weights()
    bias = np.asarray(metad.frame_bias).reshape(-1, metad.walkers)
    lines = ["frame,chain,step,bias_kj_per_mol,c_kj_per_mol,weight"]
    for frame, (step, c) in enumerate(zip(metad.frame_steps, metad.frame_c)):
        for chain in range(metad.walkers):
            lines.append(f"{frame},{chain},{step},{bias[frame, chain]:.6f},{c:.6f},{weights[frame, chain]:.9e}")
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    flat = weights.ravel()
    return {"deposits": metad.deposits, "frames": len(metad.frame_steps),
            "effective_sample_size": float(flat.sum() ** 2 / max((flat ** 2).sum(), 1e-300)),
            "reweighting": "c(t), Tiwary & Parrinello 2015: w ~ exp((V(s,t)*S - c(t))/kT), S the bond-angle switch"}


def check_counts(steps: int, chains: int, interval: int) -> None:
    for label, value in (("steps", steps), ("chains", chains), ("interval", interval)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer; got {value}")
    if steps < interval:
        raise ValueError(f"steps ({steps}) is less than the interval between clean frames ({interval}): "
                         "the run would write no sample")


def attach_reporters(simulation: WalkSimulation, files: RunFiles, interval: int, write_walk: bool,
                     append: bool) -> JumpReporter:
    """The run's reporters: clean samples, the walk (optional), a log (with the acceptance rate of a
    Metropolis walk) and the checkpoint."""
    samples = JumpReporter(files.samples, interval, denoiser=simulation.denoiser, append=append)
    simulation.reporters.append(samples)
    if write_walk:
        simulation.reporters.append(app.DCDReporter(files.walk, interval, append=append))
    log = AcceptanceStateDataReporter if simulation.integrator.metropolis else app.StateDataReporter
    simulation.reporters.append(log(files.log, interval * 10, step=True, time=True, potentialEnergy=True,
                                    speed=True, elapsedTime=True, append=append))
    # A metadynamics run's checkpoint carries its bias (frame records included): written at the chunk
    # boundaries where Ctrl-C stops, not at every frame, so its cost does not grow with the run.
    every = interval * FRAMES_PER_CHUNK if getattr(simulation, "metadynamics", None) is not None else interval
    simulation.reporters.append(_CheckpointReporter(files, every))
    return samples


def step_until(simulation: WalkSimulation, steps: int, interval: int, files: RunFiles, progress: bool) -> bool:
    """Step to ``steps`` in chunks of :data:`FRAMES_PER_CHUNK` frames; returns True when Ctrl-C stopped it.

    Ctrl-C asks the loop to stop at the next chunk boundary, so no frame is half-written; a second
    Ctrl-C interrupts at once. Either way the reporters' files are closed and, at a frame boundary,
    the checkpoint is written, so the checkpoint and the trajectories agree (resume cuts any frame
    past the checkpoint)."""
    bar = tqdm(total=steps, initial=min(simulation.currentStep, steps), unit="step", disable=not progress,
               desc=f"JAMUN {simulation.name} x{simulation.noised.num_chains}")
    chunk = interval * FRAMES_PER_CHUNK
    stop_requested = []

    def request_stop(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(signum)

    interrupted = False
    try:
        with _sigint_handled_by(request_stop):
            while simulation.currentStep < steps and not stop_requested:
                todo = min(chunk - simulation.currentStep % chunk, steps - simulation.currentStep)
                simulation.step(todo)
                bar.update(todo)
        interrupted = bool(stop_requested)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        for reporter in simulation.reporters:
            if isinstance(reporter, JumpReporter):
                reporter.close()
            elif isinstance(reporter, app.DCDReporter):
                reporter._out.close()
        if simulation.currentStep % interval == 0:
            save_checkpoint(simulation, files)
    return interrupted


def run_sampling(source: str, out: str, model: str | None = None, steps: int = 10000, chains: int | None = None,
                 interval: int | None = None, write_walk: bool | None = None, resume: bool = False,
                 overwrite: bool = False, platform: str | None = None, threads: int | None = 1,
                 backend: str = "auto", seed: int | None = None, progress: bool = True, plot: bool = True,
                 relax: bool = True, implicit: str | None = None, metropolis: bool | None = None,
                 metad: dict | None = None, timestep_ps: float | None = None) -> dict:
    """Sample ``source`` (sequence or PDB) into ``out``. Returns the run record (also ``out/run.json``).

    With ``relax`` (the default) the samples are then relaxed into all-atom frames (``relaxed.dcd``,
    :func:`~openmm_jamun.relax_run.relax_samples`; ``implicit="gbn2"`` relaxes in GBn2 instead of vacuum).
    ``metropolis`` makes the walk Metropolis-exact (an energy-parametrised model only);
    ``timestep_ps`` is the walk's step (None: JAMUN's δ = σ, 0.04 ps at σ = 0.04 nm). ``metad``
    (:func:`metad_settings`) biases torsions of the walk with shared-bias well-tempered
    metadynamics (:mod:`openmm_jamun.metadynamics`); ``bias.npz`` keeps the bias with the checkpoint
    and ``weights.csv`` the weight of every clean frame.

    ``steps`` is the total. None for model, chains, interval, write_walk, seed or platform means the
    default (:data:`RUN_SETTINGS`) for a new run and the run's own for ``resume``; a resumed run keeps
    its settings, so giving a different value (or another input) is an error."""
    # 1. Settings and input, checked before the output directory is touched.
    out_path = Path(out)
    given = {"model": model, "chains": chains, "interval": interval, "write_walk": write_walk, "seed": seed,
             "platform": platform, "metropolis": metropolis, "metad": metad, "timestep_ps": timestep_ps}
    settings, record = run_settings(source, out_path, given, resume, overwrite)
    chains, interval = settings["chains"], settings["interval"]
    check_counts(steps, chains, interval)
    if settings["metad"] is not None:  # a new run: the defaults where an option was not given
        settings["metad"] = {name: METAD_DEFAULTS[name] if value is None else value
                             for name, value in settings["metad"].items()}
    if threads:
        torch.set_num_threads(int(threads))
    model_path = resolve_model(settings["model"])
    topology, positions, name = read_input(settings["input"])
    card = model_card(model_path)
    untrained, length = warn_if_untrained(model_path, card, topology)
    denoiser = denoiser_for(model_path, topology, chains)
    timestep = None if settings["timestep_ps"] is None else settings["timestep_ps"] * unit.picosecond
    integrator = JamunIntegrator(sigma=float(denoiser.sigma), metropolis=settings["metropolis"], timestep=timestep)
    integrator.setRandomNumberSeed(settings["seed"] + 1)
    simulation = create_walk_simulation(topology, positions, denoiser, chains=chains, platform=settings["platform"],
                                        threads=threads, backend=backend, seed=settings["seed"], integrator=integrator)
    check_walk(simulation.system, integrator)  # a Metropolis walk of a direct model is an error, before any output
    simulation.name = name
    if settings["metad"] is not None:  # a torsion the peptide lacks is an error here, before any output
        torsion_quartets(simulation.topology, settings["metad"]["torsions"])

    # 2. The run directory: a resumed run cut back to its checkpoint, a new one started.
    if not resume and out_path.exists():
        shutil.rmtree(out_path)
    out_path.mkdir(parents=True, exist_ok=True)
    files = RunFiles(out_path)
    if settings["metad"] is not None:  # the bias force before the checkpoint: its state includes the force
        simulation.metadynamics = attach_metadynamics(simulation, settings["metad"], interval)
    if resume:
        simulation.loadCheckpoint(files.checkpoint)
        if settings["metad"] is not None:
            if not os.path.isfile(files.bias):
                raise FileNotFoundError(f"cannot resume a metadynamics run without its bias: no {files.bias}")
            simulation.metadynamics.load(files.bias)
            if len(simulation.metadynamics.frame_steps) != simulation.currentStep // interval:
                raise ValueError(f"{files.bias} and {files.checkpoint} were not written together (start the run again)")
        done = simulation.currentStep // interval
        truncate_trajectory(files.samples, done)
        if settings["write_walk"]:
            truncate_trajectory(files.walk, done)
    else:
        with open(files.topology, "w") as handle:
            app.PDBFile.writeFile(simulation.topology, simulation.noised.clean_positions, handle)
        record = {"input": settings["input"], "name": name, "model": str(model_path), "chains": chains,
                  "interval": interval, "write_walk": settings["write_walk"], "seed": settings["seed"],
                  "metropolis": settings["metropolis"], "metad": settings["metad"],
                  "timestep_ps": settings["timestep_ps"],
                  "sigma_nm": float(simulation.noised.sigma.value_in_unit(unit.nanometer)),
                  "heavy_atoms": len(simulation.noised.atom_indices), "card": card,
                  "untrained_residues": untrained, "untrained_length": length}
    record.update({"steps": steps, "platform": simulation.context.getPlatform().getName(), "threads": threads,
                   "backend": "torch" if simulation.system.getForce(0).getName() == "JamunForce" else "python"})

    # 3. The walk.
    attach_reporters(simulation, files, interval, settings["write_walk"], append=resume)
    wall_before = record.get("wall_time_s", 0.0) if resume else 0.0
    start = time.time()

    def save_record():
        elapsed = wall_before + time.time() - start
        if integrator.metropolis:
            record["acceptance"] = {"rate": integrator.acceptance_rate, "accepted": integrator.n_accept,
                                    "proposed": integrator.n_trials}
        if getattr(simulation, "metadynamics", None) is not None and simulation.metadynamics.frame_steps:
            record["metadynamics"] = {**write_weights(simulation.metadynamics, files.weights),
                                      "exact": force_has_energy(find_score_module(simulation.system))}
        record.update({"steps_done": simulation.currentStep, "frames": simulation.currentStep // interval,
                       "wall_time_s": round(elapsed, 2),
                       "steps_per_s": round(simulation.currentStep / max(elapsed, 1e-9), 1)})
        write_json(files.record, record)

    try:
        interrupted = step_until(simulation, steps, interval, files, progress)
    finally:
        save_record()
    if interrupted:
        raise KeyboardInterrupt
    if integrator.metropolis and integrator.n_trials and integrator.acceptance_rate < LOW_ACCEPTANCE_WARNING:
        warnings.warn(
            f"the Metropolis walk of {name} accepted {integrator.acceptance_rate:.0%} of its steps: it moves "
            "slowly. A smaller step (timestep_ps, `--timestep`) raises the acceptance: at JAMUN's step even "
            "the exact noised density of a capped dipeptide accepts about half of one chain's steps and "
            "under a tenth of eight chains' (docs/design.md; benchmarks/metropolis_acceptance.py).", stacklevel=2)

    # 4. What the samples are worth.
    traj = load_heavy(str(out_path))  # every chain's samples, pooled
    record["validity"] = check_samples(traj, out_path, name)
    if plot:
        record["ramachandran"] = plot_ramachandran(out_path, traj)
    save_record()
    if relax:
        kept = read_json(files.record).get("relaxation")
        stale = kept is not None and not relaxation_is_current(kept)
        if stale:
            warnings.warn(f"{out_path}: its samples were relaxed another way (another version of this package); "
                          "relaxing every frame again", stacklevel=2)
        record["relaxation"] = relax_samples(out_path, implicit=implicit, threads=threads or 1,
                                             progress=progress, restart=stale)
    return record


#: Warn when more than this fraction of the samples fell apart (a bond off by more than FELL_APART_NM).
FELL_APART_WARNING = 0.05
#: Warn when a Metropolis walk accepted fewer than this fraction of its steps.
LOW_ACCEPTANCE_WARNING = 0.5


def check_samples(traj, out_path: Path, name: str) -> dict:
    """Chemical validity (:mod:`openmm_jamun.analysis.validity`) of the pooled heavy-atom samples,
    with the input structure (``topology.pdb``) as the all-atom template; warns when the walk fell
    apart, which a model outside its domain does."""
    start = mdtraj.load(str(out_path / TOPOLOGY)).xyz[0, :traj.n_atoms]  # the input structure, chain 1
    checker = ValidityChecker(traj.topology, start)
    validity = validity_summary(frame_validity(traj, checker=checker))
    if validity["fell_apart_fraction"] > FELL_APART_WARNING:
        warnings.warn(
            f"{validity['fell_apart_fraction']:.0%} of the samples of {name} have a bond more than "
            f"{10 * FELL_APART_NM:g} Å off its amber14 length: the walk fell apart, and these frames are "
            "not a conformational ensemble. The model is likely outside its domain (see its card's "
            "training list).", stacklevel=3)
    return validity


def plot_ramachandran(out_path: Path, traj) -> str | None:
    """Ramachandran plot of the pooled samples ``traj`` of a run directory (None when no residue has
    both φ and ψ)."""
    path = ramachandran(backbone_pairs(torsions(traj)), str(out_path / "ramachandran.png"),
                        title=f"{out_path.name}: {traj.n_frames} samples")
    if path is None:
        warnings.warn("no residue has both a phi and a psi torsion (an uncapped single residue or dipeptide): "
                      "no Ramachandran plot", stacklevel=3)
    return path


__all__ = ["run_sampling", "RUN_SETTINGS"]
