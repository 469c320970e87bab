"""JumpReporter: write the walk's denoised ("jumped") frames x̂(y).

It follows OpenMM's reporter protocol and sits in ``simulation.reporters``
beside StateDataReporter, DCDReporter (the noisy walk) and CheckpointReporter.
Per reported frame it asks OpenMM for positions only (asking for forces would
make OpenMM evaluate the walk's forces again) and runs one denoiser forward.
With ``relax=True`` it writes all-atom frames instead: the jump of every chain,
relaxed in one batch by :class:`openmm_jamun.relax.Relaxer`, with the all-atom
topology written beside the trajectory. The walk's own positions are never touched.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from openmm import app, unit

from .force import check_walk, find_score_module
from .errors import NonFiniteWalkError
from .analysis.validity import CHECKS
from .model.contract import DenoiserContractError, load_denoiser
from .relax import Relaxer, replicate_topology
from .topology import subset_topology
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
    relax : bool or Relaxer
        Write relaxed all-atom frames instead of the heavy-atom jumps: True relaxes with
        :class:`~openmm_jamun.relax.Relaxer`'s defaults (amber14 in vacuum, one CPU thread, the
        first jump as the template for the hydrogens); a Relaxer built for one chain of the
        simulation's topology chooses the settings (implicit solvent, platform, ...). The K chains
        of each reported step are relaxed together, in one batch. A chain that cannot be relaxed
        is written as its jump with template hydrogens and counted in :attr:`relaxation`, with
        the reason, never dropped.
    topologyFile : str, optional
        With ``relax``: where the all-atom topology (a PDB of the first written frame) goes;
        default ``<file without extension>_topology.pdb``. mdtraj and OpenMM need it to read an
        all-atom DCD or XTC.

    The headers are those OpenMM's own reporters write for the same simulation: DCD first step =
    interval = ``reportInterval`` with the integrator's step size as time step; XTC frame k (from 1,
    counting frames already in an appended file) has step k·reportInterval and time step·dt; .h5
    stores the same times (ps).
    """

    def __init__(self, file, reportInterval: int, denoiser=None, append: bool = False, relax=False,
                 topologyFile=None):
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
        if not (isinstance(relax, (bool, Relaxer))):
            raise TypeError(f"relax must be True, False or a Relaxer; got {type(relax).__name__}")
        self._relaxer = relax if isinstance(relax, Relaxer) else None
        self._relax = relax is not False
        self.topology_path = None
        if self._relax:
            self.topology_path = (os.fspath(topologyFile) if topologyFile is not None
                                  else os.path.splitext(self._path)[0] + "_topology.pdb")
            if os.path.abspath(self.topology_path) == os.path.abspath(self._path):
                raise ValueError(f"topologyFile must not be the trajectory file itself ({self._path})")
            if self._append and not os.path.isfile(self.topology_path):
                raise FileNotFoundError(f"cannot append relaxed frames: their topology {self.topology_path} "
                                        "does not exist")
        elif topologyFile is not None:
            raise ValueError("topologyFile is for relaxed frames: pass relax=True as well")
        #: With ``relax``: frames (chains counted one by one) written, how many are valid, how
        #: many fail each check, and the chains that could not be relaxed (step, chain, reason).
        self.relaxation = {"frames": 0, "valid": 0, "failing": {check: 0 for check in CHECKS}, "not_relaxed": []}
        self._denoiser = None
        if denoiser is not None:
            self._denoiser, _ = load_denoiser(denoiser)
        if not self._append:
            # Everything that can fail is checked above; like OpenMM's DCDReporter ('wb') and XTCReporter
            # (which empties the file here so that XTCFile accepts it), replace an existing file now.
            open(self._path, "wb").close()
        self._writer = None
        self._handle = None
        self._topology_written = self._append  # an appended run keeps the topology it has
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
        if self._relax:
            topology = self._open_relaxation(simulation)
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

    def _open_relaxation(self, simulation) -> app.Topology:
        """Build (or check) the Relaxer for one chain and return the all-atom topology of every chain."""
        chains = simulation.topology.getNumChains()
        per_chain = simulation.topology.getNumAtoms() // chains
        if self._relaxer is None:
            chain = next(iter(simulation.topology.chains()))
            one = subset_topology(simulation.topology, [atom.index for atom in chain.atoms()])
            template = self.jump(simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
                                 .value_in_unit(unit.nanometer))[:per_chain]
            self._relaxer = Relaxer(one, template * unit.nanometer)
        elif self._relaxer.n_input_heavy != per_chain:
            raise ValueError(f"the Relaxer is for {self._relaxer.n_input_heavy} heavy atoms; a chain of this walk "
                             f"has {per_chain}")
        self._chains = chains
        self._all_atom_topology = replicate_topology(self._relaxer.topology, chains)
        return self._all_atom_topology

    def _relaxed(self, simulation, xhat: np.ndarray) -> np.ndarray:
        """All-atom positions [K·n_all, 3] nm of the K chains of one jump, relaxed together."""
        result = self._relaxer.relax(xhat.reshape(self._chains, -1, 3).astype(np.float64))
        positions = result.positions.copy()
        for chain, reason in enumerate(result.reasons):
            if not np.isfinite(positions[chain]).all():  # could not be relaxed: the jump, template hydrogens
                positions[chain] = self._relaxer.place_hydrogens(xhat.reshape(self._chains, -1, 3)[chain:chain + 1])[0]
                self.relaxation["not_relaxed"].append((int(simulation.currentStep), chain, reason))
        self.relaxation["frames"] += self._chains
        self.relaxation["valid"] += int(np.sum(result.valid))
        for check in CHECKS:
            self.relaxation["failing"][check] += int(np.sum(~result.validity[check]))
        if not self._topology_written:
            with open(self.topology_path + ".tmp", "w") as handle:
                app.PDBFile.writeFile(self._all_atom_topology,
                                      positions.reshape(-1, 3) * unit.nanometer, handle, keepIds=True)
            os.replace(self.topology_path + ".tmp", self.topology_path)
            self._topology_written = True
        return positions.reshape(-1, 3)

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
        frame = self._relaxed(simulation, xhat) if self._relax else xhat
        self._writer.writeModel(frame * unit.nanometer)
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
