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

from .force import check_walk, find_score_module
from .errors import NonFiniteWalkError
from .model.contract import DenoiserContractError, load_denoiser
from .trajectory import HDF5Frames, PDBModels, trajectory_format

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
        Append to an existing file (for runs continued from a checkpoint). If False, the file is
        created empty at construction, replacing any existing one, as OpenMM's DCDReporter and
        XTCReporter do.

    The headers are those OpenMM's own reporters write for the same simulation: DCD first step =
    interval = ``reportInterval`` with the integrator's step size as time step; XTC frame k (from 1,
    counting frames already in an appended file) has step k·reportInterval and time step·dt; .h5
    stores the same times (ps).
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
        if not self._append:
            # Everything that can fail is checked above; like OpenMM's DCDReporter ('wb') and XTCReporter
            # (which empties the file here so that XTCFile accepts it), replace an existing file now.
            open(self._path, "wb").close()
        self._writer = None
        self._handle = None
        self.frames_written = 0

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def _open(self, simulation):
        check_walk(simulation.system, simulation.integrator)
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
        # Exactly the arguments OpenMM's DCDReporter / XTCReporter pass: the per-step dt, and the first
        # step = the interval (on append DCDFile and XTCFile continue from the frames already there).
        dt = simulation.integrator.getStepSize()
        first = self._interval
        # an empty file (created at construction, run stopped before its first frame) has nothing to
        # append to: start it afresh
        append = self._append and os.path.getsize(self._path) > 0
        if self._format == "dcd":
            handle = open(self._path, "r+b" if append else "wb")
            try:
                self._writer = app.DCDFile(handle, topology, dt, first, self._interval, append)
            except Exception:
                handle.close()
                raise
            self._handle = handle
        elif self._format == "xtc":
            self._writer = app.XTCFile(self._path, topology, dt, first, self._interval, append)
        elif self._format == "pdb":
            self._writer = PDBModels(self._path, topology, append)
        else:
            self._writer = HDF5Frames(self._path, topology, append, dt.value_in_unit(unit.picosecond),
                                       self._interval)
        self._append = True  # reopened after close(): continue the file, never start it again

    def jump(self, positions_nm: np.ndarray) -> np.ndarray:
        """x̂(y) for positions in nm, as a float32 array in nm."""
        with torch.no_grad():  # not inference_mode: an energy model's jump takes a gradient
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
