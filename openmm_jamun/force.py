"""JamunForce: the learned score of the noised density as an OpenMM force.

F(y) = kT · clip(s(y)),  s(y) = (x̂(y) − y) / σ²   (kJ/mol/nm)

where x̂ is a TorchScript denoiser and clip limits each atom's score vector to
a norm of at most ``score_clip`` (100 nm⁻¹ by default, for every kind of model,
as the published sampler does). The score needs one forward pass of the denoiser and no
backward pass, so the module hands OpenMM forces directly.

Energy: a direct denoiser's score need not be the gradient of anything, so
there is no potential energy to report. Both backends report a potential
energy of exactly 0 kJ/mol; a StateDataReporter's "Potential Energy" column is
0 and its "Total Energy" is the walk's kinetic energy. Nothing in OpenMM
depends on this energy when the integrator is a plain :class:`JamunIntegrator`.

An energy-parametrised denoiser (``DenoiserInfo.has_energy``: its module has
``energy(positions) -> E`` in kT) reports U = kT·E_θ(y) and the forces
−∇U = kT·s(y), both from one forward and one backward pass
(:class:`EnergyForceModule`). The forces are −∇U wherever no atom's score
exceeds the clip, which near the noised data is nearly everywhere. Far from
the data a learned energy is rough: its curvature there can exceed what a
step of δ = σ integrates stably (4M/δ², 2,500 nm⁻² at M = 1), and one unclipped kick can
throw a chain apart for good. The clip bounds every kick, as it does for a
direct model. It does not cost the Metropolis walk its
exactness: velocity Verlet is volume-preserving and reversible for any force
that depends on positions alone, and acceptance is on U, which is never
clipped. ``score_clip=None`` gives forces that are −∇U everywhere.

Two backends compute the same module:

* :class:`JamunForce` is an openmm-torch ``TorchForce`` (TorchScript runs
  inside OpenMM's C++; runs on CUDA with the CUDA build of openmm-torch).
* :class:`JamunPythonForce` is an ``openmm.PythonForce`` (OpenMM >= 8.5) that
  calls the same TorchScript module from Python; it needs no openmm-torch.
"""

from __future__ import annotations

import logging
import math
import pickle
from xml.etree import ElementTree
from typing import Tuple

import numpy as np
import openmm
import torch
from openmm import unit

from ._units import denoiser_sigma_nm, inverse_length_per_nm, kT_kj_per_mol, temperature_kelvin
from .errors import METROPOLIS_NEEDS_ENERGY, MetropolisWithoutEnergyError
from .platforms import BACKENDS
from .model.contract import DenoiserInfo, load_denoiser, module_from_bytes, module_to_bytes

def _import_openmmtorch():
    # openmmtorch imports the deprecated 'simtk.openmm' alias, which logs a
    # warning on the root logger; it is not the user's concern.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import openmmtorch
    finally:
        logging.disable(previous)
    return openmmtorch


try:  # openmm-torch is optional: the PythonForce backend does without it.
    _openmmtorch = _import_openmmtorch()
except ImportError as _error:  # pragma: no cover - depends on the install
    _openmmtorch = None
    _OPENMMTORCH_ERROR = str(_error)



def _walk_positions(positions: torch.Tensor, num_atoms: int) -> torch.Tensor:
    """The walk's positions as float32 without a graph (Reference/CPU platforms pass float64 with
    requires_grad=True), checked: the denoiser's atom count, and finite."""
    y = positions.detach().to(torch.float32)
    if y.shape[0] != num_atoms:
        raise RuntimeError(
            "JamunForce: the System has " + str(y.shape[0]) + " particles but the denoiser is for "
            + str(num_atoms) + " atoms"
        )
    if not bool(torch.isfinite(y).all()):
        raise RuntimeError("JamunForce: positions are not finite (NaN or inf)")
    return y


def _clip_per_atom(score: torch.Tensor, clip: float) -> torch.Tensor:
    """``score`` with each atom's vector norm capped at ``clip`` (no cap when clip is 0)."""
    if clip > 0.0:
        norm = torch.linalg.vector_norm(score, dim=-1, keepdim=True)
        score = score * torch.clamp(clip / norm, max=1.0)
    return score


class ScoreForceModule(torch.nn.Module):
    """TorchScript module mapping positions (nm) to (energy = 0, forces = kT·clip(s(y)))."""

    def __init__(self, denoiser: torch.jit.ScriptModule, sigma: float, kT: float, score_clip: float):
        super().__init__()
        self.denoiser = denoiser
        self.sigma = float(sigma)
        self.kT = float(kT)
        self.score_clip = float(score_clip)
        self.inv_sigma2 = 1.0 / self.sigma**2
        self.num_atoms = int(denoiser.num_atoms)
        self.has_energy = False

    def forward(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = _walk_positions(positions, self.num_atoms)
        xhat = self.denoiser(y)
        if not bool(torch.isfinite(xhat).all()):
            raise RuntimeError("JamunForce: the denoiser returned non-finite output")
        score = _clip_per_atom((xhat - y) * self.inv_sigma2, self.score_clip)
        forces = (self.kT * score).to(positions.dtype)
        energy = torch.zeros((), dtype=positions.dtype, device=positions.device)
        return energy, forces


class EnergyForceModule(ScoreForceModule):
    """TorchScript module mapping positions (nm) to (U = kT·E_θ(y), forces = −∇U = kT·s(y)).

    One forward and one backward pass of ``denoiser.energy``. With ``score_clip`` > 0 the forces
    are kT·clip(−∇E), −∇U wherever the clip does not act; the energy is never clipped."""

    def __init__(self, denoiser: torch.jit.ScriptModule, sigma: float, kT: float, score_clip: float):
        super().__init__(denoiser, sigma, kT, score_clip)
        self.has_energy = True

    def forward(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = _walk_positions(positions, self.num_atoms)
        was_enabled = torch.is_grad_enabled()
        torch.ops.aten.set_grad_enabled(True)
        y.requires_grad_(True)
        energy = self.denoiser.energy(y)
        grad = torch.autograd.grad([energy], [y])[0]
        torch.ops.aten.set_grad_enabled(was_enabled)
        if grad is None:
            grad = torch.zeros_like(y)
        energy = energy.detach()
        if not bool(torch.isfinite(energy)) or not bool(torch.isfinite(grad).all()):
            raise RuntimeError("JamunForce: the denoiser returned non-finite output")
        score = _clip_per_atom(-grad, self.score_clip)
        forces = (self.kT * score).to(positions.dtype)
        return (self.kT * energy.to(torch.float64)).to(positions.dtype).reshape(()), forces


#: The per-atom score clip, as the published sampler has it.
DEFAULT_SCORE_CLIP = 100 / unit.nanometer


def build_score_module(denoiser, sigma=None, temperature=300 * unit.kelvin, score_clip="auto"):
    """Check a denoiser and wrap it: returns (scripted force module, DenoiserInfo, kT in kJ/mol).

    The module is a :class:`ScoreForceModule` (energy 0) for a direct denoiser and an
    :class:`EnergyForceModule` (energy kT·E) for one with an energy. ``score_clip="auto"`` clips
    every model's score at :data:`DEFAULT_SCORE_CLIP`."""
    module, info = load_denoiser(denoiser)
    denoiser_sigma_nm(sigma, info.sigma)
    kT = kT_kj_per_mol(temperature_kelvin(temperature))
    if isinstance(score_clip, str):
        if score_clip != "auto":
            raise ValueError(f"score_clip must be an inverse length, None or 'auto'; got {score_clip!r}")
        score_clip = DEFAULT_SCORE_CLIP
    clip = inverse_length_per_nm(score_clip, "score_clip") if score_clip is not None else 0.0
    if clip < 0:
        raise ValueError(f"score_clip must be >= 0 (0 or None disables clipping); got {clip}")
    wrapper = EnergyForceModule if info.has_energy else ScoreForceModule
    scripted = torch.jit.script(wrapper(module, info.sigma, kT, clip))
    return scripted, info, kT


class _JamunForceMixin:
    """What both backends tell about themselves."""

    denoiser_info: DenoiserInfo
    score_module: torch.jit.ScriptModule

    @property
    def sigma(self) -> unit.Quantity:
        return self.denoiser_info.sigma * unit.nanometer

    @property
    def num_atoms(self) -> int:
        return self.denoiser_info.num_atoms

    @property
    def denoiser(self) -> torch.jit.ScriptModule:
        return self.score_module.denoiser

    @property
    def has_energy(self) -> bool:
        """True when the force reports a real potential energy, kT·E_θ (an energy-parametrised denoiser)."""
        return self.denoiser_info.has_energy


if _openmmtorch is not None:

    class JamunForce(_JamunForceMixin, _openmmtorch.TorchForce):
        """The JAMUN score as an openmm-torch ``TorchForce`` (forces output; energy 0, or kT·E_θ for an
        energy-parametrised denoiser).

        Parameters
        ----------
        denoiser : str, path or torch.jit.ScriptModule
            A TorchScript denoiser meeting the contract of docs/design.md.
        sigma : length, optional
            Noise level; defaults to the denoiser's own ``sigma``. A different
            value is an error (a denoiser only knows its own noise level).
        temperature : temperature
            Sets kT, the unit of the force (it cancels in the walk's statistics).
        score_clip : inverse length, None or "auto"
            Per-atom cap on the norm of the score (nm⁻¹); None disables it (an energy model's forces
            are then −∇U everywhere). "auto": 100 nm⁻¹, for every kind of model.
        """

        def __init__(self, denoiser, sigma=None, temperature=300 * unit.kelvin, score_clip="auto"):
            score_module, info, kT = build_score_module(denoiser, sigma, temperature, score_clip)
            super().__init__(score_module)
            self.setOutputsForces(True)
            self.setName("JamunForce")
            self.score_module = score_module
            self.denoiser_info = info
            self.kT = kT * unit.kilojoule_per_mole

else:  # pragma: no cover - depends on the install

    class JamunForce:  # type: ignore[no-redef]
        def __init__(self, *args, **kwargs):
            raise ImportError(
                "JamunForce needs openmm-torch (module 'openmmtorch'), which failed to import: "
                f"{_OPENMMTORCH_ERROR}. Install openmm-jamun[cpu] (or [cuda]), or use JamunPythonForce."
            )


class ScoreComputation:
    """The callable a PythonForce runs: positions → (energy, forces). Picklable for XmlSerializer.

    ``device`` is where torch evaluates the module ("cpu" or "cuda"); OpenMM hands a
    PythonForce positions on the host whatever its platform.
    """

    def __init__(self, score_module: torch.jit.ScriptModule, device: str = "cpu"):
        self.device = str(device)
        self.module = score_module.to(self.device)

    def __call__(self, state):
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        # no_grad, not inference_mode: an energy module takes its own gradient inside
        with torch.no_grad():
            y = torch.from_numpy(np.ascontiguousarray(positions)).to(self.device)
            energy, forces = self.module(y)
        return float(energy), forces.cpu().numpy()

    def __getstate__(self):
        return {"module": module_to_bytes(self.module), "device": self.device}

    def __setstate__(self, state):
        self.device = state.get("device", "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            self.device = "cpu"  # a System saved on a GPU machine still loads on a CPU one
        self.module = module_from_bytes(state["module"]).to(self.device)


class JamunPythonForce(_JamunForceMixin, openmm.PythonForce):
    """The JAMUN score as an ``openmm.PythonForce``: same module, same arguments as :class:`JamunForce`,
    plus ``device``, where torch runs the denoiser ("cpu" or "cuda")."""

    def __init__(self, denoiser, sigma=None, temperature=300 * unit.kelvin, score_clip="auto",
                 device: str = "cpu"):
        score_module, info, kT = build_score_module(denoiser, sigma, temperature, score_clip)
        super().__init__(ScoreComputation(score_module, device))
        self.setName("JamunPythonForce")
        self.score_module = score_module
        self.denoiser_info = info
        self.kT = kT * unit.kilojoule_per_mole




def default_backend() -> str:
    """"torch" where openmm-torch imports, else "python".

    Measured on 2 CPU cores (benchmarks/plugin_overhead.py): the TorchForce
    walk costs less per step for peptide-sized systems (22-200 particles), and
    on CUDA it keeps positions and forces on the GPU, where a PythonForce
    copies them through the host every step.
    """
    return "torch" if _openmmtorch is not None else "python"


def make_jamun_force(denoiser, backend: str = "auto", **kwargs):
    """Build the force with the named backend: "torch" (TorchForce), "python" (PythonForce) or "auto"."""
    if backend == "auto":
        backend = default_backend()
    if backend == "torch":
        return JamunForce(denoiser, **kwargs)
    if backend == "python":
        return JamunPythonForce(denoiser, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def find_score_module(system: openmm.System) -> torch.jit.ScriptModule | None:
    """The ScoreForceModule of the (first) JAMUN force in ``system``, or None.

    Works on Systems that went through XmlSerializer too: the module is read
    back from the TorchForce or from the PythonForce's pickled computation.
    """
    for force in system.getForces():
        if isinstance(force, openmm.PythonForce):
            # The pickled computation is only reachable through the XML form
            # (getPickledFunction returns an unwrapped vector<char>).
            try:
                root = ElementTree.fromstring(openmm.XmlSerializer.serialize(force))
                computation = pickle.loads(bytes.fromhex(root.get("function", "")))
            except Exception:
                continue
            if isinstance(computation, ScoreComputation):
                return computation.module
        elif _openmmtorch is not None and _openmmtorch.TorchForce.isinstance(force):
            module = _openmmtorch.TorchForce.cast(force).getModule()
            if hasattr(module, "denoiser") and hasattr(module, "inv_sigma2"):
                return module
    return None


def force_has_energy(module) -> bool:
    """True for the force module of an energy-parametrised denoiser (it reports U = kT·E_θ)."""
    try:
        return bool(module.has_energy)
    except (AttributeError, RuntimeError):
        return False


def check_metropolis(system: openmm.System, integrator) -> None:
    """A :class:`~openmm_jamun.integrator.MetropolisWithoutEnergyError` when ``integrator`` is a
    Metropolis walk and the JAMUN force of ``system`` has no energy (a direct denoiser). Silent
    otherwise (also when the System has no JAMUN force)."""
    if not getattr(integrator, "metropolis", False):
        return
    module = find_score_module(system)
    if module is not None and not force_has_energy(module):
        raise MetropolisWithoutEnergyError(METROPOLIS_NEEDS_ENERGY)


def check_walk(system: openmm.System, integrator) -> None:
    """Everything the System and the integrator must agree on: one kT (:func:`check_walk_temperature`)
    and, for a Metropolis walk, a force with an energy (:func:`check_metropolis`)."""
    check_metropolis(system, integrator)
    check_walk_temperature(system, integrator)


def check_walk_temperature(system: openmm.System, integrator) -> None:
    """An error unless the JAMUN force of ``system`` and ``integrator`` (a JamunIntegrator, or any
    CustomIntegrator with a global ``kT``) share one kT: with F = kT_force·s and noise at kT_integrator
    the walk samples p_Y^(kT_force/kT_integrator), not p_Y. Silent when either has no kT to compare."""
    module = find_score_module(system)
    if module is None or not hasattr(module, "kT") or not isinstance(integrator, openmm.CustomIntegrator):
        return
    names = [integrator.getGlobalVariableName(i) for i in range(integrator.getNumGlobalVariables())]
    if "kT" not in names:
        return
    force_kT, integrator_kT = float(module.kT), integrator.getGlobalVariableByName("kT")
    if not math.isclose(force_kT, integrator_kT, rel_tol=1e-6):
        kelvin = kT_kj_per_mol(1.0)
        raise ValueError(f"the JAMUN force's temperature ({force_kT / kelvin:.2f} K) is not the integrator's "
                         f"({integrator_kT / kelvin:.2f} K): the walk would sample p_Y^{force_kT / integrator_kT:.3g} "
                         "instead of p_Y; give both the same temperature")
