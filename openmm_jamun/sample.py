"""The main job: walk-jump sampling of a peptide with a trained model, as OpenMM objects.

``run_sampling`` builds the noised System with K chains, runs JamunIntegrator,
writes clean frames with JumpReporter (and optionally the noisy walk), a
StateDataReporter log and a checkpoint that ``resume=True`` continues, then a
Ramachandran plot. Everything that can be checked is checked before the output
directory is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

MODELS_DIR = Path(os.environ.get("JAMUN_MODELS", Path(__file__).resolve().parents[1] / "models"))
DEFAULT_MODEL = "capped_2aa"

SAMPLES = "samples.dcd"
WALK = "walk.dcd"
TOPOLOGY = "topology.pdb"
LOG = "log.csv"
CHECKPOINT = "walk.chk"
RUN = "run.json"
STRUCTURE_SUFFIXES = (".pdb", ".cif", ".pdbx")
# What a run keeps when it is resumed, and the defaults of a new run.
RUN_SETTINGS = {"model": "default", "chains": 1, "interval": 10, "write_walk": False, "seed": 0, "platform": "CPU"}


def resolve_model(model: str) -> Path:
    """A model name in models/ ('default' is the shipped one) or a path."""
    if model == "default":
        model = DEFAULT_MODEL
    path = Path(model)
    if path.is_file():
        return path
    candidate = MODELS_DIR / f"{model}.pt"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"model {model!r} not found (neither a file nor {candidate})")


def model_card(model_path: Path) -> dict | None:
    card = model_path.with_suffix(".json")
    return json.loads(card.read_text()) if card.is_file() else None


def card_sequences(card: dict | None) -> list[str]:
    """The card's training peptides that are one-letter sequences (they are peptide directory names:
    the recipe names them by sequence; another name says nothing about residues or length)."""
    from .data.build import ONE_TO_THREE

    names = card.get("train", []) if card else []
    return [name for name in names if name and all(letter in ONE_TO_THREE for letter in name)]


def untrained_residues(card: dict | None, topology) -> list[str]:
    """Residue types of ``topology`` absent from every training sequence listed in the model card
    (caps ACE/NME count as trained for a capped model). Empty when the card lists no training sequence."""
    from .data.build import ONE_TO_THREE
    from .model.featurize import RESIDUE_ALIASES

    sequences = card_sequences(card)
    if not sequences:
        return []
    trained = {ONE_TO_THREE[letter] for sequence in sequences for letter in sequence}
    trained |= {"ACE", "NME"}
    present = {RESIDUE_ALIASES.get(r.name, r.name) for r in topology.residues() if r.name != "HOH"}
    return sorted(present - trained)


def training_lengths(card: dict | None) -> list[int]:
    """Peptide lengths (residues, caps not counted) of the training sequences the card lists."""
    return sorted({len(sequence) for sequence in card_sequences(card)})


def untrained_length(card: dict | None, topology) -> int | None:
    """The number of residues of ``topology`` (caps and water not counted) when no training
    sequence in the model card has that length, else None. A denoiser trained on dipeptides
    alone can jump a noised capped single residue worse than the noise left it."""
    trained = training_lengths(card)
    length = sum(1 for r in topology.residues() if r.name not in ("ACE", "NME", "HOH"))
    return None if not trained or length in trained else length


def untrained_termini(card: dict | None, topology) -> str | None:
    """'uncapped' or 'capped' when the peptide's termini differ from those of the training peptides
    (the card's ``caps``), else None."""
    if not card or "caps" not in card:
        return None
    names = {r.name for r in topology.residues()}
    capped = "ACE" in names and "NME" in names
    return None if capped == bool(card["caps"]) else ("capped" if capped else "uncapped")


def warn_if_untrained(model_path: Path, card: dict | None, topology, stacklevel: int = 3):
    """Warn about residue types, a peptide length and termini that no training sequence of the model
    card has; returns (untrained residue names, untrained length or None)."""
    termini = untrained_termini(card, topology)
    if termini is not None:
        trained = "capped (ACE-...-NME)" if card["caps"] else "uncapped (zwitterionic)"
        warnings.warn(f"{model_path.name} was trained on {trained} peptides only; this one is {termini}: "
                      "expect poorer samples", stacklevel=stacklevel)
    untrained = untrained_residues(card, topology)
    if untrained:
        warnings.warn(f"{model_path.name} was not trained on residue type(s) {', '.join(untrained)} "
                      "(see its card's training list): expect poorer samples", stacklevel=stacklevel)
    length = untrained_length(card, topology)
    if length is not None:
        trained = ", ".join(map(str, training_lengths(card)))
        warnings.warn(f"{model_path.name} was trained on peptides of {trained} residue(s) only; "
                      f"this one has {length}: expect poorer samples", stacklevel=stacklevel)
    return untrained, length


def denoiser_for(model_path, topology, chains: int):
    """A TorchScript denoiser for ``topology`` with ``chains`` chains, from a training
    checkpoint (exported now) or an existing TorchScript export (checked)."""
    from .model.contract import load_denoiser
    from .model.export import checkpoint_record, export_denoiser, load_checkpoint

    model_path = Path(model_path)
    if checkpoint_record(model_path) is not None:
        denoiser, _ = load_checkpoint(model_path, averaged=True)
        return export_denoiser(denoiser, topology, chains=chains)
    module, info = load_denoiser(str(model_path))
    if info.num_chains != chains:
        raise ValueError(f"{model_path} is a TorchScript export for {info.num_chains} chain(s); "
                         f"asked for {chains} (export it again with chains={chains})")
    return module


def read_input(source: str):
    """(topology, positions, name) from a one-letter sequence (capped) or a PDB/PDBx file holding one
    peptide of standard residues with PDB atom names."""
    from openmm import app, unit

    from .analysis.ensemble import d_amino_acids
    from .data.build import build_peptide, check_sequence
    from .model.featurize import ATOM_NAMES, RESIDUE_ALIASES, RESIDUES

    if os.path.isfile(source):
        if source.lower().endswith((".cif", ".pdbx")):
            structure = app.PDBxFile(source)
        elif source.lower().endswith(".pdb"):
            structure = app.PDBFile(source)
        else:
            raise ValueError(f"input file {source}: expected a .pdb, .cif or .pdbx structure")
        topology, positions = structure.topology, structure.getPositions(asNumpy=True)
        name = Path(source).stem
    else:
        if source.lower().endswith(STRUCTURE_SUFFIXES):
            raise FileNotFoundError(f"input file not found: {source}")
        topology, positions = build_peptide(check_sequence(source))
        name = source.upper()
    unsupported = sorted({r.name for r in topology.residues()
                          if RESIDUE_ALIASES.get(r.name, r.name) not in RESIDUES[:-1]})
    if unsupported:
        raise ValueError(f"unsupported residue(s) {', '.join(unsupported)} in {source}: the model knows the 20 "
                         "standard amino acids and ACE/NME caps")
    chains = [chain.id for chain in topology.chains() if any(r.name != "HOH" for r in chain.residues())]
    if len(chains) > 1:
        raise ValueError(f"{source} holds {len(chains)} peptide chains ({', '.join(chains)}): JAMUN samples one "
                         "peptide; write each chain to its own file")
    # An unknown name featurizes as 'other', and OpenMM drops its template bonds: the model would
    # see a different molecule. Names follow the PDB/Amber convention (ACE CH3, NME N and C).
    unknown = sorted({f"{atom.name} ({atom.residue.name})" for atom in topology.atoms()
                      if atom.element is not None and atom.element.symbol not in ("H", "D")
                      and atom.name not in ATOM_NAMES[:-1]})
    if unknown:
        raise ValueError(f"heavy atom name(s) {', '.join(unknown)} in {source} are unknown to the model, which "
                         "knows PDB atom names (e.g. ACE's CH3): rename them")
    mirrored, labels = d_amino_acids(np.asarray(positions.value_in_unit(unit.nanometer)), topology)
    if mirrored.any():
        names = ", ".join(label for label, d in zip(labels, mirrored[0]) if d)
        raise ValueError(f"{source}: {names} {'is a D amino acid' if mirrored.sum() == 1 else 'are D amino acids'} "
                         "(by the handedness of N, C and CB about CA); the model knows L amino acids only and "
                         "would sample the L form")
    return topology, positions, name


def _same_input(given: str, kept: str) -> bool:
    if os.path.isfile(given) or os.path.isfile(kept):
        return os.path.abspath(given) == os.path.abspath(kept)
    return given.upper() == kept.upper()


def _same_setting(key: str, given, kept) -> bool:
    if key == "model":
        return resolve_model(given).resolve() == Path(kept).resolve()
    if key == "platform":
        return str(given).lower() == str(kept).lower()
    return given == kept


def openmm_platform(name: str):
    """The OpenMM platform called ``name`` (any case), or an error that lists the available ones."""
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    match = {n.lower(): n for n in names}.get(str(name).lower())
    if match is None:
        raise ValueError(f"OpenMM platform {name!r} is not available here; available: {', '.join(names)} "
                         "(CUDA needs the [cuda] extra and a GPU)")
    return openmm.Platform.getPlatformByName(match)


def run_sampling(source: str, out: str, model: str | None = None, steps: int = 10000, chains: int | None = None,
                 interval: int | None = None, write_walk: bool | None = None, resume: bool = False,
                 overwrite: bool = False, platform: str | None = None, threads: int | None = 1,
                 backend: str = "auto", seed: int | None = None, progress: bool = True, plot: bool = True) -> dict:
    """Sample ``source`` (sequence or PDB) into ``out``. Returns the run record (also ``out/run.json``).

    ``steps`` is the total. None for model, chains, interval, write_walk, seed or platform means the
    default (:data:`RUN_SETTINGS`) for a new run and the run's own for ``resume``; a resumed run keeps
    its settings, so giving a different value (or another input) is an error."""
    from openmm import app, unit
    from tqdm import tqdm

    from . import JamunIntegrator, JumpReporter, create_noised_system, make_jamun_force
    from .reporter import truncate_trajectory

    given = {"model": model, "chains": chains, "interval": interval, "write_walk": write_walk, "seed": seed,
             "platform": platform}
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise ValueError(f"output {out} is a file, not a directory")
    if resume:
        if not (out_path / CHECKPOINT).is_file():
            raise FileNotFoundError(f"cannot resume: no {CHECKPOINT} in {out}")
        record = json.loads((out_path / RUN).read_text())
        for key, value in given.items():
            if value is not None and not _same_setting(key, value, record[key]):
                raise ValueError(f"cannot resume {out} with {key} {value!r}: the run was started with "
                                 f"{record[key]!r} (run.json), and a resumed run keeps its settings")
        if not _same_input(source, record["input"]):
            raise ValueError(f"cannot resume {out} with input {source!r}: it is a run of {record['input']!r}")
        settings = {key: record[key] for key in given}
        source = record["input"]
    else:
        if out_path.exists() and any(out_path.iterdir()) and not overwrite:
            raise FileExistsError(f"output directory {out} exists and is not empty (use --overwrite or --resume)")
        settings = {key: RUN_SETTINGS[key] if value is None else value for key, value in given.items()}
    model, chains, interval, write_walk, seed, platform = (settings[key] for key in given)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps}")
    if int(chains) != chains or chains < 1:
        raise ValueError(f"chains must be a positive integer; got {chains}")
    if int(interval) != interval or interval < 1:
        raise ValueError(f"interval must be a positive integer; got {interval}")
    if steps < interval:
        raise ValueError(f"steps ({steps}) is less than the interval between clean frames ({interval}): "
                         "the run would write no sample")

    # Everything that can fail on input is checked before the output directory is touched.
    if threads:
        torch.set_num_threads(int(threads))
    model_path = resolve_model(model)
    topology, positions, name = read_input(source)
    card = model_card(model_path)
    untrained, length = warn_if_untrained(model_path, card, topology)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hydrogens are dropped by design here
        from .model.featurize import featurize

        features = featurize(topology)
        denoiser = denoiser_for(model_path, topology, chains)
        walk = create_noised_system(topology, positions, denoiser, chains=chains, seed=seed)
    from .force import default_backend

    backend = default_backend() if backend == "auto" else backend
    extra = {"device": "cuda"} if (backend == "python" and platform == "CUDA") else {}
    force = make_jamun_force(denoiser, backend=backend, **extra)
    integrator = JamunIntegrator(sigma=walk.sigma)
    integrator.setRandomNumberSeed(seed + 1)
    plat = openmm_platform(platform)
    properties = {"Threads": str(int(threads))} if (threads and plat.getName() == "CPU") else {}
    walk.system.addForce(force)
    simulation = app.Simulation(walk.topology, walk.system, integrator, plat, properties)

    if not resume and out_path.exists():
        shutil.rmtree(out_path)
    out_path.mkdir(parents=True, exist_ok=True)
    files = {k: str(out_path / v) for k, v in
             dict(samples=SAMPLES, walk=WALK, topology=TOPOLOGY, log=LOG, checkpoint=CHECKPOINT).items()}
    if resume:
        simulation.loadCheckpoint(files["checkpoint"])
        done = simulation.currentStep // interval
        truncate_trajectory(files["samples"], done)
        if write_walk:
            truncate_trajectory(files["walk"], done)
        wall_before = record.get("wall_time_s", 0.0)
    else:
        simulation.context.setPositions(walk.positions)
        simulation.context.setVelocities(walk.velocities)
        with open(files["topology"], "w") as handle:
            app.PDBFile.writeFile(walk.topology, walk.clean_positions, handle)
        record = {"input": source, "name": name, "model": str(model_path), "chains": chains, "interval": interval,
                  "write_walk": write_walk, "seed": seed, "sigma_nm": float(walk.sigma.value_in_unit(unit.nanometer)),
                  "heavy_atoms": features.num_atoms, "card": card,
                  "untrained_residues": untrained, "untrained_length": length}
        wall_before = 0.0
    append = resume
    samples = JumpReporter(files["samples"], interval, denoiser=denoiser, append=append)
    simulation.reporters.append(samples)
    if write_walk:
        simulation.reporters.append(app.DCDReporter(files["walk"], interval, append=append))
    simulation.reporters.append(app.StateDataReporter(files["log"], interval * 10, step=True, time=True,
                                                      speed=True, elapsedTime=True, append=append))
    simulation.reporters.append(app.CheckpointReporter(files["checkpoint"], interval))
    record.update({"steps": steps, "platform": plat.getName(), "threads": threads,
                   "backend": "torch" if force.getName() == "JamunForce" else "python"})

    def save_record(elapsed):
        record.update({"steps_done": simulation.currentStep, "frames": simulation.currentStep // interval,
                       "wall_time_s": round(elapsed, 2),
                       "steps_per_s": round(simulation.currentStep / max(elapsed, 1e-9), 1)})
        tmp = out_path / (RUN + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, out_path / RUN)

    start = time.time()
    bar = tqdm(total=steps, initial=min(simulation.currentStep, steps), unit="step", disable=not progress,
               desc=f"JAMUN {name} x{chains}")
    chunk = interval * 10
    interrupted = False
    # Ctrl-C asks the loop to stop at the next chunk boundary, so no frame is half-written;
    # a second Ctrl-C interrupts at once (the finally block still closes the files).
    stop_requested = []

    def request_stop(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, request_stop) if in_main_thread else None
    try:
        while simulation.currentStep < steps and not stop_requested:
            todo = min(chunk - simulation.currentStep % chunk, steps - simulation.currentStep)
            simulation.step(todo)
            bar.update(todo)
        interrupted = bool(stop_requested)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if in_main_thread:  # None means the old handler was not set from Python: restore the default
            signal.signal(signal.SIGINT, signal.default_int_handler if previous_handler is None else previous_handler)
        bar.close()
        samples.close()
        for reporter in simulation.reporters:
            if isinstance(reporter, app.DCDReporter):
                reporter._out.close()
        # The checkpoint and trajectories agree at a frame boundary; resume truncates past it.
        if simulation.currentStep % interval == 0:
            simulation.saveCheckpoint(files["checkpoint"])
        save_record(wall_before + time.time() - start)
    if interrupted:
        raise KeyboardInterrupt
    from .analysis.report import load_heavy

    traj = load_heavy(str(out_path))  # every chain's samples, pooled
    record["validity"] = check_samples(traj, out_path, name)
    if plot:
        record["ramachandran"] = plot_ramachandran(out_path, traj)
    save_record(wall_before + time.time() - start)
    return record


#: Warn when more than this fraction of the samples fell apart (a bond off by more than FELL_APART_NM).
FELL_APART_WARNING = 0.05


def check_samples(traj, out_path: Path, name: str) -> dict:
    """Chemical validity of the pooled samples against the bond lengths of the input structure
    (``topology.pdb``); warns when the walk fell apart, which a model outside its domain does."""
    import mdtraj

    from .analysis.ensemble import FELL_APART_NM, bond_lengths, chemical_validity

    start = mdtraj.load(str(out_path / TOPOLOGY))  # the input structure, once per chain
    validity = chemical_validity(traj, bond_lengths(start.atom_slice(range(traj.n_atoms))))
    if validity["fell_apart_fraction"] > FELL_APART_WARNING:
        warnings.warn(
            f"{validity['fell_apart_fraction']:.0%} of the samples of {name} have a bond more than "
            f"{10 * FELL_APART_NM:g} Å off its "
            "length in the input structure: the walk fell apart, and these frames are not a conformational "
            "ensemble. The model is likely outside its domain (see its card's training list).", stacklevel=3)
    return validity


def plot_ramachandran(out_path: Path, traj) -> str | None:
    """Ramachandran plot of the pooled samples ``traj`` of a run directory (None when no residue has
    both φ and ψ)."""
    from .analysis.plots import ramachandran
    from .analysis.torsions import backbone_pairs, torsions

    path = ramachandran(backbone_pairs(torsions(traj)), str(out_path / "ramachandran.png"),
                        title=f"{out_path.name}: {traj.n_frames} samples")
    if path is None:
        warnings.warn("no residue has both a phi and a psi torsion (an uncapped single residue or dipeptide): "
                      "no Ramachandran plot", stacklevel=3)
    return path


__all__ = ["run_sampling", "resolve_model", "denoiser_for", "read_input"]
