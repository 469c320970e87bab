"""JumpReporter: write the walk's denoised ("jumped") frames x̂(y).

It follows OpenMM's reporter protocol and sits in ``simulation.reporters``
beside StateDataReporter, DCDReporter (the noisy walk) and CheckpointReporter.
Per reported frame it asks OpenMM for positions only (asking for forces would
make OpenMM evaluate the walk's forces again) and runs one denoiser forward.
"""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import torch
from openmm import app, unit

from .force import check_walk_temperature, find_score_module
from .integrator import NonFiniteWalkError
from .model.contract import DenoiserContractError, load_denoiser

FORMATS = {".dcd": "dcd", ".xtc": "xtc", ".pdb": "pdb", ".h5": "hdf5", ".hdf5": "hdf5"}


def trajectory_format(path) -> str:
    """The trajectory format of ``path`` by its extension, or a ValueError naming the supported ones."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the trajectory format of {path!r}: use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def _dcd_layout(handle):
    """(header bytes, bytes per frame, whole frames in the file) of a DCD file as OpenMM's DCDFile writes it."""
    handle.seek(0)
    head = handle.read(100)
    if len(head) < 100 or head[4:8] != b"CORD" or struct.unpack("<i", head[:4])[0] != 84:
        raise ValueError(f"{handle.name} does not have a DCD header")
    box = struct.unpack("<i", head[48:52])[0]
    comments = struct.unpack("<i", head[92:96])[0]
    handle.seek(104 + comments)
    num_atoms = struct.unpack("<i", handle.read(4))[0]
    header = 112 + comments
    frame = (56 if box else 0) + 3 * (8 + 4 * num_atoms)
    size = os.fstat(handle.fileno()).st_size
    return header, frame, max(size - header, 0) // frame


def _copy_head(path, tmp, nbytes):
    with open(path, "rb") as source, open(tmp, "wb") as target:
        target.write(source.read(nbytes))


def truncate_trajectory(path, frames: int) -> None:
    """Cut a trajectory file back to its first ``frames`` frames, atomically (used on resume to drop
    frames written after the checkpoint that the run restarts from).

    The frames that stay are kept byte for byte, with their headers: DCD first step, interval and time
    step, XTC steps and times, HDF5 times (a rewrite through mdtraj would replace them with its own).
    """
    path = os.fspath(path)
    fmt = trajectory_format(path)
    frames = int(frames)
    if os.path.getsize(path) == 0:  # created, never written: nothing to cut
        return
    base, ext = os.path.splitext(path)
    tmp = f"{base}.tmp{ext}"
    if fmt == "dcd":
        with open(path, "rb") as handle:
            header, frame, count = _dcd_layout(handle)
            keep = header + min(frames, count) * frame
            if count <= frames and os.path.getsize(path) == keep:
                return
            handle.seek(12)
            first, interval = struct.unpack("<2i", handle.read(8))
        frames = min(frames, count)
        _copy_head(path, tmp, keep)
        with open(tmp, "r+b") as handle:  # frame count and last step, as DCDFile.writeModel keeps them
            handle.seek(8)
            handle.write(struct.pack("<i", frames))
            handle.seek(20)
            handle.write(struct.pack("<i", first + (frames - 1) * interval if frames else 0))
    elif fmt == "xtc":
        from mdtraj.formats import XTCTrajectoryFile

        with XTCTrajectoryFile(path) as handle:
            offsets = handle.offsets
        if len(offsets) <= frames:
            return
        _copy_head(path, tmp, int(offsets[frames]))
    elif fmt == "pdb":
        with open(path) as handle:
            lines = handle.readlines()
        ends = [i for i, line in enumerate(lines) if line.startswith("ENDMDL")]
        if len(ends) <= frames:
            return
        if frames:
            cut = ends[frames - 1] + 1
        else:
            cut = next(i for i, line in enumerate(lines) if line.startswith("MODEL"))
        with open(tmp, "w") as handle:
            handle.writelines(lines[:cut])
    else:
        import tables

        with tables.open_file(path) as handle:
            if handle.root.coordinates.shape[0] <= frames:
                return
        shutil.copyfile(path, tmp)
        with tables.open_file(tmp, "a") as handle:
            for node in handle.root:
                if isinstance(node, tables.EArray) and node.shape[0] > frames:
                    node.truncate(frames)
    os.replace(tmp, path)


class _PDBModels:
    """Multi-model PDB written one MODEL at a time (appends continue the numbering)."""

    def __init__(self, path, topology, append):
        self._topology = topology
        self._model = 0
        if append:
            atoms = 0
            with open(path) as handle:
                for line in handle:
                    if line.startswith("MODEL"):
                        self._model += 1
                    elif self._model == 1 and line.startswith(("ATOM", "HETATM")):
                        atoms += 1
            if self._model and atoms != topology.getNumAtoms():
                raise ValueError(f"cannot append {topology.getNumAtoms()} atoms to {path}, whose models have {atoms}")
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
    """mdtraj's HDF5 format (needs PyTables). Frame times (ps) follow the step numbering of OpenMM's
    XTCFile: frame k of the file (from 1, appended frames included) is step k·interval."""

    def __init__(self, path, topology, append, dt_ps, interval):
        import mdtraj
        from mdtraj.formats import HDF5TrajectoryFile

        self._step_ps = dt_ps * interval
        self._file = HDF5TrajectoryFile(path, mode="a" if append else "w")
        try:
            if append:
                coordinates = self._file.root.coordinates
                self._count = int(coordinates.shape[0])
                if coordinates.shape[1] != topology.getNumAtoms():
                    raise ValueError(f"cannot append {topology.getNumAtoms()} atoms to {path}, "
                                     f"whose frames have {coordinates.shape[1]}")
                # a file written without times gets none (mdtraj refuses time for only some frames)
                self._timed = "time" in self._file.root
            else:
                self._file.topology = mdtraj.Topology.from_openmm(topology)
                self._count, self._timed = 0, True
        except Exception:
            self._file.close()
            raise

    def writeModel(self, positions):
        xyz = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float32)[None]
        time = np.array([(self._count + 1) * self._step_ps]) if self._timed else None
        self._file.write(xyz, time=time)
        self._file.flush()
        self._count += 1

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
        check_walk_temperature(simulation.system, simulation.integrator)
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
            self._writer = _PDBModels(self._path, topology, append)
        else:
            self._writer = _HDF5Frames(self._path, topology, append, dt.value_in_unit(unit.picosecond),
                                       self._interval)
        self._append = True  # reopened after close(): continue the file, never start it again

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
