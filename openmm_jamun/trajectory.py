"""Trajectory files: format by extension, frame writers OpenMM lacks, and cutting a file back on resume.

OpenMM writes DCD and XTC itself (``app.DCDFile``, ``app.XTCFile``); multi-model PDB and mdtraj's HDF5
are written here one frame at a time. ``truncate_trajectory`` cuts any of the four back to its first
frames byte for byte, keeping the headers OpenMM wrote, so that a run resumed from a checkpoint
continues its files exactly. Nothing here needs torch: reference MD imports it.
"""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
from openmm import app, unit

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


def dcd_frame_count(path) -> int:
    """Whole frames in a DCD file written by OpenMM's DCDFile (0 for an empty file)."""
    if os.path.getsize(path) == 0:
        return 0
    with open(path, "rb") as handle:
        return _dcd_layout(handle)[2]


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


class PDBModels:
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


class HDF5Frames:
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
