"""JumpReporter: write the walk's denoised ("jumped") frames x̂(y).

It follows OpenMM's reporter protocol and sits in ``simulation.reporters``
beside StateDataReporter, DCDReporter (the noisy walk) and CheckpointReporter.
Per reported frame it asks OpenMM for positions only (asking for forces would
make OpenMM evaluate the walk's forces again) and runs one denoiser forward.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from openmm import app, unit

from .force import find_score_module
from .integrator import NonFiniteWalkError
from .model.contract import DenoiserContractError, load_denoiser

FORMATS = {".dcd": "dcd", ".xtc": "xtc", ".pdb": "pdb", ".h5": "hdf5", ".hdf5": "hdf5"}


def trajectory_format(path) -> str:
    """The trajectory format of ``path`` by its extension, or a ValueError naming the supported ones."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the trajectory format of {path!r}: use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def truncate_trajectory(path, topology_path, frames: int) -> None:
    """Cut a trajectory file back to its first ``frames`` frames, atomically (used on resume to drop
    frames written after the checkpoint that the run restarts from)."""
    import mdtraj

    traj = mdtraj.load(os.fspath(path), top=os.fspath(topology_path))
    if traj.n_frames > frames:
        base, ext = os.path.splitext(os.fspath(path))
        tmp = f"{base}.tmp{ext}"
        traj[:frames].save(tmp)
        os.replace(tmp, path)


class _PDBModels:
    """Multi-model PDB written one MODEL at a time (appends continue the numbering)."""

    def __init__(self, path, topology, append):
        self._topology = topology
        self._model = 0
        if append:
            with open(path) as handle:
                self._model = sum(1 for line in handle if line.startswith("MODEL"))
            self._file = open(path, "a")
        else:
            self._file = open(path, "w")
            app.PDBFile.writeHeader(topology, self._file)

    def writeModel(self, positions):
        self._model += 1
        app.PDBFile.writeModel(self._topology, positions, self._file, modelIndex=self._model)
        self._file.flush()

    def close(self):
        self._file.close()


class _HDF5Frames:
    """mdtraj's HDF5 format (needs PyTables)."""

    def __init__(self, path, topology, append):
        import mdtraj
        from mdtraj.formats import HDF5TrajectoryFile

        self._file = HDF5TrajectoryFile(path, mode="a" if append else "w")
        if not append:
            self._file.topology = mdtraj.Topology.from_openmm(topology)

    def writeModel(self, positions):
        xyz = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float32)[None]
        self._file.write(xyz)
        self._file.flush()

    def close(self):
        self._file.close()


class JumpReporter:
    """Writes x̂(y), the denoised walk frame, every ``reportInterval`` steps.

    Parameters
    ----------
    file : str
        Output path; the format comes from the extension (.dcd, .xtc, .pdb, .h5).
    reportInterval : int
        Steps between frames.
    denoiser : path or ScriptModule, optional
        The denoiser to jump with. By default, the one inside the System's
        JamunForce / JamunPythonForce.
    append : bool
        Append to an existing file (for runs continued from a checkpoint).
    """

    def __init__(self, file, reportInterval: int, denoiser=None, append: bool = False):
        self._path = os.fspath(file)
        self._format = trajectory_format(self._path)
        if int(reportInterval) != reportInterval or reportInterval < 1:
            raise ValueError(f"reportInterval must be a positive integer; got {reportInterval}")
        self._interval = int(reportInterval)
        self._append = bool(append)
        if self._append and not os.path.isfile(self._path):
            raise FileNotFoundError(f"cannot append: {self._path} does not exist")
        if self._format == "hdf5":
            try:
                import tables  # noqa: F401  (availability check)
            except ImportError as error:
                raise ImportError("writing .h5 trajectories needs PyTables ('pip install tables')") from error
        self._denoiser = None
        if denoiser is not None:
            self._denoiser, _ = load_denoiser(denoiser)
        self._writer = None
        self._handle = None
        self.frames_written = 0

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def _open(self, simulation):
        if self._denoiser is None:
            score_module = find_score_module(simulation.system)
            if score_module is None:
                raise DenoiserContractError(
                    "JumpReporter found no JamunForce or JamunPythonForce in the System: pass denoiser=..."
                )
            self._denoiser = score_module.denoiser
        num_atoms = int(self._denoiser.num_atoms)
        if num_atoms != simulation.topology.getNumAtoms():
            raise DenoiserContractError(
                f"the denoiser is for {num_atoms} atoms but the simulation has {simulation.topology.getNumAtoms()}"
            )
        topology = simulation.topology
        dt = simulation.integrator.getStepSize() * self._interval
        first = simulation.currentStep + self._interval - simulation.currentStep % self._interval
        if self._format == "dcd":
            self._handle = open(self._path, "r+b" if self._append else "wb")
            self._writer = app.DCDFile(self._handle, topology, dt, first, self._interval, self._append)
        elif self._format == "xtc":
            self._writer = app.XTCFile(self._path, topology, dt, first, self._interval, self._append)
        elif self._format == "pdb":
            self._writer = _PDBModels(self._path, topology, self._append)
        else:
            self._writer = _HDF5Frames(self._path, topology, self._append)

    def jump(self, positions_nm: np.ndarray) -> np.ndarray:
        """x̂(y) for positions in nm, as a float32 array in nm."""
        with torch.inference_mode():
            xhat = self._denoiser(torch.from_numpy(np.asarray(positions_nm, dtype=np.float32)))
        return xhat.numpy()

    def report(self, simulation, state):
        y = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.isfinite(y).all():
            raise NonFiniteWalkError(
                f"JumpReporter: non-finite walk positions at step {simulation.currentStep}; frame not written"
            )
        if self._writer is None:
            self._open(simulation)
        xhat = self.jump(y)
        if not np.isfinite(xhat).all():
            raise NonFiniteWalkError(
                f"JumpReporter: the denoiser returned non-finite output at step {simulation.currentStep}; "
                "frame not written"
            )
        self._writer.writeModel(xhat * unit.nanometer)
        if self._handle is not None:
            self._handle.flush()
        self.frames_written += 1

    def close(self):
        if self._writer is not None and hasattr(self._writer, "close"):
            self._writer.close()
        if self._handle is not None:
            self._handle.close()
        self._writer = self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
