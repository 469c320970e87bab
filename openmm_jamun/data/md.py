"""Reference MD with OpenMM: amber14 (ff14SB) + GBn2 implicit solvent at 300 K.

No cutoff, LangevinMiddleIntegrator 2 fs with friction 1/ps, HBond
constraints, 100 ps of equilibration, then one frame per ps to an XTC file
(all atoms; the topology is ``topology.pdb`` beside it). A checkpoint written
with every chunk of frames makes runs resumable; ``md.json`` records the
settings, the seed, the length and the wall time.
"""

from __future__ import annotations

import os
import time

import mdtraj
import openmm
from tqdm import tqdm
from openmm import app, unit

from ..platforms import get_platform
from ..records import check_same_settings, read_json, write_json
from ..topology import heavy_atom_indices, heavy_atom_slice
from ..trajectory import truncate_trajectory
from .build import FORCE_FIELD_FILES, add_hydrogens, build_peptide, forcefield, peptide_name, write_pdb

TOPOLOGY_FILE = "topology.pdb"
TRAJECTORY_FILE = "traj.xtc"
#: Which atoms ``traj.xtc`` holds (``md.json``'s "trajectory_atoms").
TRAJECTORY_ATOMS = ("all", "heavy")
CHECKPOINT_FILE = "md.chk"
SIDECAR_FILE = "md.json"


DEFAULT_EQUILIBRATION = 100 * unit.picosecond


def _check_resume(out_dir, record, structure, caps, seed, requested: dict):
    """An error when a resumed run is asked for another peptide or other settings than its md.json.

    The frame count of a resumed run is derived from its step count and its equilibration, so a
    different equilibration (or timestep, frame interval) would truncate or misplace frames."""
    source = record.get("source")
    if source is not None and not os.path.isfile(structure) and not os.path.isfile(source):
        if str(source).upper() != str(structure).upper() or record.get("caps", caps) != caps:
            raise ValueError(f"{out_dir} holds MD of {record.get('name', source)}; asked for "
                             f"{peptide_name(structure, caps)} (use another --out)")
    kept = {"trajectory_atoms": "all", **record}  # a run from before the setting existed stored all atoms
    check_same_settings(out_dir, kept, {"seed": seed, **requested},
                        hint="a resumed run keeps the settings of its md.json (omit a setting to keep the run's own)")


def run_md(structure: str, out_dir: str, ns: float = 10.0, *, caps: bool = True, seed: int | None = None,
           temperature=300 * unit.kelvin, timestep=2 * unit.femtosecond, friction=1 / unit.picosecond,
           frame_interval=1 * unit.picosecond, equilibration=None,
           trajectory_atoms: str | None = None, platform: str | None = None, threads: int | None = None,
           progress: bool = True, chunk_frames: int = 100) -> dict:
    """Run (or resume) reference MD of a peptide sequence or PDB file into ``out_dir``.

    A directory that holds a checkpoint is resumed, and a larger ``ns`` extends a finished run.
    A resumed run keeps the settings it started with: ``equilibration`` (default 100 ps for a new
    run) is then the run's own, and a setting that differs from ``md.json`` (temperature, timestep,
    friction, frame interval, equilibration, seed, or another peptide) is an error, not a trajectory
    that silently changes physics or loses frames. ``seed`` None: 0 for a new run, the run's own on resume.

    ``trajectory_atoms`` is ``"all"`` (default for a new run) or ``"heavy"``: the heavy atoms are
    all a JAMUN model trains on, and a heavy-atom XTC is smaller (about 0.15 MB per ns of a capped
    dipeptide against 0.21), which is how the training set is stored in the repository.
    ``topology.pdb`` and the checkpoint stay all-atom either way, so the run resumes and extends;
    :func:`load_md_frames` reads both kinds.

    Returns the sidecar record (also written to ``out_dir/md.json``).
    """
    if ns <= 0:
        raise ValueError(f"ns must be positive; got {ns}")
    if trajectory_atoms not in (None, *TRAJECTORY_ATOMS):
        raise ValueError(f"trajectory_atoms must be one of {TRAJECTORY_ATOMS}; got {trajectory_atoms!r}")
    os.makedirs(out_dir, exist_ok=True)
    top_path = os.path.join(out_dir, TOPOLOGY_FILE)
    xtc_path = os.path.join(out_dir, TRAJECTORY_FILE)
    chk_path = os.path.join(out_dir, CHECKPOINT_FILE)
    json_path = os.path.join(out_dir, SIDECAR_FILE)

    resuming = os.path.isfile(chk_path) and os.path.isfile(top_path)
    requested = {"temperature_K": temperature.value_in_unit(unit.kelvin),
                 "timestep_fs": timestep.value_in_unit(unit.femtosecond),
                 "friction_per_ps": friction.value_in_unit(unit.picosecond**-1),
                 "frame_interval_ps": frame_interval.value_in_unit(unit.picosecond),
                 "equilibration_ps": None if equilibration is None else equilibration.value_in_unit(unit.picosecond),
                 "trajectory_atoms": trajectory_atoms}
    if resuming:
        pdb = app.PDBFile(top_path)
        topology, positions = pdb.topology, pdb.positions
        record = read_json(json_path) if os.path.isfile(json_path) else {}
        _check_resume(out_dir, record, structure, caps, seed, requested)
        seed = record.get("seed", 0 if seed is None else seed)
        if equilibration is None and "equilibration_ps" in record:
            equilibration = record["equilibration_ps"] * unit.picosecond
        if trajectory_atoms is None:
            trajectory_atoms = record.get("trajectory_atoms", "all")
    else:
        if os.path.isfile(structure):
            pdb = app.PDBFile(structure)
            modeller = add_hydrogens(pdb.topology, pdb.positions)
            topology, positions = modeller.topology, modeller.positions
            name = os.path.splitext(os.path.basename(structure))[0]
        else:
            topology, positions = build_peptide(structure, caps=caps)
            name = peptide_name(structure, caps)
        record = {"name": name, "source": structure, "caps": caps, "wall_time_s": 0.0}
        seed = 0 if seed is None else seed
    if equilibration is None:
        equilibration = DEFAULT_EQUILIBRATION
    if trajectory_atoms is None:
        trajectory_atoms = "all"

    steps_per_frame = int(round(frame_interval.value_in_unit(unit.femtosecond) / timestep.value_in_unit(unit.femtosecond)))
    equil_steps = int(round(equilibration / timestep))
    total_frames = int(round(ns * 1000 / frame_interval.value_in_unit(unit.picosecond)))

    system = forcefield().createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(temperature, friction, timestep)
    integrator.setRandomNumberSeed(int(seed) + 1)  # 0 would mean "pick one"
    plat, props = get_platform(platform, threads)
    simulation = app.Simulation(topology, system, integrator, plat, props)

    start = time.time()
    if resuming:
        simulation.loadCheckpoint(chk_path)
        done_frames = max(0, (simulation.currentStep - equil_steps) // steps_per_frame)
        if os.path.isfile(xtc_path):
            truncate_trajectory(xtc_path, done_frames)
    else:
        simulation.context.setPositions(positions)
        simulation.minimizeEnergy()
        simulation.context.setVelocitiesToTemperature(temperature, int(seed) + 1)
        simulation.step(equil_steps)
        state = simulation.context.getState(getPositions=True)
        write_pdb(top_path, topology, state.getPositions())
        done_frames = 0
        if os.path.exists(xtc_path):
            os.remove(xtc_path)

    append = os.path.isfile(xtc_path)
    subset = None if trajectory_atoms == "all" else [int(i) for i in heavy_atom_indices(topology)]
    simulation.reporters.append(app.XTCReporter(xtc_path, steps_per_frame, append=append, atomSubset=subset))
    record.update({
        "force_field": list(FORCE_FIELD_FILES),
        "solvent": "implicit GBn2",
        "temperature_K": temperature.value_in_unit(unit.kelvin),
        "timestep_fs": timestep.value_in_unit(unit.femtosecond),
        "friction_per_ps": friction.value_in_unit(unit.picosecond**-1),
        "constraints": "HBonds",
        "nonbonded": "NoCutoff",
        "equilibration_ps": equilibration.value_in_unit(unit.picosecond),
        "frame_interval_ps": frame_interval.value_in_unit(unit.picosecond),
        "seed": int(seed),
        "platform": plat.getName(),
        "threads": threads,
        "topology": TOPOLOGY_FILE,
        "trajectory": TRAJECTORY_FILE,
        "trajectory_atoms": trajectory_atoms,
    })
    wall_before = record.get("wall_time_s", 0.0)
    bar = tqdm(total=total_frames, initial=min(done_frames, total_frames), unit="ps", disable=not progress,
               desc=f"MD {record.get('name', '')}")
    try:
        while done_frames < total_frames:
            frames = min(chunk_frames, total_frames - done_frames)
            simulation.step(frames * steps_per_frame)
            done_frames += frames
            simulation.saveCheckpoint(chk_path)
            elapsed = wall_before + time.time() - start
            record.update({
                "frames": done_frames,
                "length_ns": done_frames * frame_interval.value_in_unit(unit.picosecond) / 1000,
                "wall_time_s": round(elapsed, 1),
                "ns_per_day": round(done_frames * frame_interval.value_in_unit(unit.picosecond) / 1000
                                    / max(elapsed, 1e-9) * 86400, 1),
            })
            write_json(json_path, record)
            bar.update(frames)
    finally:
        bar.close()
        for reporter in simulation.reporters:
            if hasattr(reporter, "close"):
                reporter.close()
    return record


def load_md_frames(md_dir: str, heavy_atoms_only: bool = True, stride: int = 1):
    """The MD trajectory of ``md_dir`` as an mdtraj Trajectory (heavy atoms by default).

    A run stored with ``trajectory_atoms="heavy"`` has no hydrogens to give: asking for all atoms is an error."""
    topology = mdtraj.load_topology(os.path.join(md_dir, TOPOLOGY_FILE))
    sidecar = os.path.join(md_dir, SIDECAR_FILE)
    stored = read_json(sidecar).get("trajectory_atoms", "all") if os.path.isfile(sidecar) else "all"
    if stored == "heavy":
        if not heavy_atoms_only:
            raise ValueError(f"{md_dir} stores heavy atoms only (trajectory_atoms 'heavy' in {SIDECAR_FILE})")
        topology = topology.subset(heavy_atom_indices(topology))
    traj = mdtraj.load(os.path.join(md_dir, TRAJECTORY_FILE), top=topology, stride=stride)
    if heavy_atoms_only and stored != "heavy":
        traj = heavy_atom_slice(traj)
    return traj


def md_frames_ns(md_dir: str) -> float:
    return float(read_json(os.path.join(md_dir, SIDECAR_FILE)).get("length_ns", 0.0))


__all__ = ["run_md", "load_md_frames", "md_frames_ns"]
