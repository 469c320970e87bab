"""The TorchScript denoiser contract (see docs/design.md) and its checks.

Minimal contract, which any denoiser trained elsewhere can meet:

* ``forward(positions: Tensor[N, 3] float32, nm) -> Tensor[N, 3]`` returning x̂(y);
* attributes ``sigma`` (float, nm) and ``num_atoms`` (int).

The package's own exports add ``jamun_format_version``, ``jamun_kind``,
``num_chains`` and, for trained networks, the topology (``atom_names``,
``atom_elements``, ``residue_names``) of one chain. Files that carry
``jamun_format_version`` are checked strictly.

Energy-parametrised (conservative) denoisers add ``energy(positions) -> E``, a 0-dim
tensor in kT with x̂(y) = y − σ²∇E(y) (docs/design.md). Format version 2 introduced
the kinds that have one ("energy": a trained network, "mixture": the analytic test
density); version-1 files ("gaussian", "network") still load. A module meeting only the
minimal contract counts as an energy model when it has an ``energy`` method.
"""

from __future__ import annotations

import io
import math
import os
import weakref
from dataclasses import dataclass

import torch

#: Version of the export format written by this package (2: energy kinds; 1 still loads).
FORMAT_VERSION = 2
#: Kinds of export this package writes.
KNOWN_KINDS = ("gaussian", "network", "energy", "mixture")
#: Kinds whose modules have ``energy(positions) -> E`` (kT) with x̂ = y − σ²∇E.
ENERGY_KINDS = ("energy", "mixture")
#: Kinds that carry the topology of one chain.
TOPOLOGY_KINDS = ("network", "energy")


class DenoiserContractError(ValueError):
    """A module or file that is not a usable JAMUN denoiser."""


@dataclass(frozen=True)
class DenoiserInfo:
    """What the package knows about a denoiser once it has been checked."""

    sigma: float
    num_atoms: int
    num_chains: int
    kind: str  # "gaussian", "network" or "external" (minimal contract only)
    atom_names: tuple[str, ...] | None = None  # one chain
    atom_elements: tuple[str, ...] | None = None  # one chain
    residue_names: tuple[str, ...] | None = None  # one chain, per atom
    has_energy: bool = False  # energy(positions) -> E (kT), with x̂ = y − σ²∇E

    @property
    def parametrization(self) -> str:
        """"energy" for a conservative denoiser (score = −∇E), else "direct"."""
        return "energy" if self.has_energy else "direct"

    @property
    def atoms_per_chain(self) -> int:
        return self.num_atoms // self.num_chains


def _attr(module, name):
    try:
        return getattr(module, name)
    except (AttributeError, RuntimeError):
        return None


def check_denoiser(module, where: str = "denoiser", strict: bool | None = None) -> DenoiserInfo:
    """Check ``module`` against the contract and return what it declares.

    ``strict`` defaults to True for modules that declare
    ``jamun_format_version`` (the package's own exports).
    """
    if not isinstance(module, torch.jit.ScriptModule):
        raise DenoiserContractError(
            f"{where} is not a TorchScript module (got {type(module).__name__}); "
            "export it with torch.jit.script or openmm_jamun.model.export_denoiser"
        )
    missing = [name for name in ("sigma", "num_atoms") if _attr(module, name) is None]
    if not hasattr(module, "forward"):
        missing.append("forward")
    if missing:
        raise DenoiserContractError(
            f"{where} is not a JAMUN denoiser: missing attribute(s) {', '.join(map(repr, missing))} "
            "(the contract needs forward(positions[N,3] nm) -> x̂[N,3], sigma (nm) and num_atoms)"
        )
    sigma = float(module.sigma)
    num_atoms = int(module.num_atoms)
    if not (math.isfinite(sigma) and sigma > 0):
        raise DenoiserContractError(f"{where}: sigma must be a positive number of nm, got {sigma}")
    if num_atoms <= 0:
        raise DenoiserContractError(f"{where}: num_atoms must be positive, got {num_atoms}")

    version = _attr(module, "jamun_format_version")
    if strict is None:
        strict = version is not None
    if not strict:
        chains = _attr(module, "num_chains")
        return DenoiserInfo(sigma, num_atoms, int(chains) if chains else 1, "external",
                            has_energy=_has_method(module, "energy"))

    if version is None:
        raise DenoiserContractError(f"{where} is not a JAMUN export: no 'jamun_format_version' attribute")
    if int(version) > FORMAT_VERSION:
        raise DenoiserContractError(
            f"{where} has export format version {int(version)}; this openmm-jamun reads up to "
            f"{FORMAT_VERSION}: upgrade openmm-jamun"
        )
    kind = _attr(module, "jamun_kind")
    if kind not in KNOWN_KINDS:
        raise DenoiserContractError(f"{where}: unknown jamun_kind {kind!r} (expected one of {KNOWN_KINDS})")
    num_chains = _attr(module, "num_chains")
    if num_chains is None or int(num_chains) <= 0 or num_atoms % int(num_chains):
        raise DenoiserContractError(f"{where}: num_chains={num_chains!r} does not divide num_atoms={num_atoms}")
    num_chains = int(num_chains)
    names = elements = residues = None
    if kind in ENERGY_KINDS and not _has_method(module, "energy"):
        raise DenoiserContractError(f"{where}: a {kind!r} export must have a method energy(positions) -> E")
    if kind in ENERGY_KINDS and int(version) < 2:
        raise DenoiserContractError(f"{where}: kind {kind!r} needs export format version >= 2, not {int(version)}")
    if kind in TOPOLOGY_KINDS:
        names, elements, residues = (
            _attr(module, "atom_names"),
            _attr(module, "atom_elements"),
            _attr(module, "residue_names"),
        )
        per_chain = num_atoms // num_chains
        for label, value in (("atom_names", names), ("atom_elements", elements), ("residue_names", residues)):
            if value is None or len(value) != per_chain:
                raise DenoiserContractError(
                    f"{where}: export metadata {label!r} is missing or does not list {per_chain} atoms"
                )
        names, elements, residues = tuple(names), tuple(elements), tuple(residues)
    return DenoiserInfo(sigma, num_atoms, num_chains, kind, names, elements, residues,
                        has_energy=kind in ENERGY_KINDS)


def _has_method(module, name: str) -> bool:
    try:
        return callable(getattr(module, name))
    except (AttributeError, RuntimeError):
        return False


def check_forward(module, info: DenoiserInfo, where: str = "denoiser") -> None:
    """Run one forward pass on a plausible input and check the output's shape."""
    generator = torch.Generator().manual_seed(0)
    test = 0.3 * torch.randn(info.num_atoms, 3, generator=generator)
    with torch.no_grad():
        try:
            out = module(test)
        except Exception as error:  # TorchScript raises plain RuntimeErrors
            raise DenoiserContractError(
                f"{where}: forward(positions[{info.num_atoms}, 3]) failed: {error}"
            ) from error
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (info.num_atoms, 3):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DenoiserContractError(
            f"{where}: forward must return a tensor of shape ({info.num_atoms}, 3); got {shape}"
        )
    if info.has_energy:
        try:
            energy = module.energy(test)
        except Exception as error:
            raise DenoiserContractError(f"{where}: energy(positions[{info.num_atoms}, 3]) failed: {error}") from error
        if not isinstance(energy, torch.Tensor) or energy.numel() != 1:
            raise DenoiserContractError(f"{where}: energy must return a scalar tensor (kT)")


def load_denoiser(source, strict: bool | None = None) -> tuple[torch.jit.ScriptModule, DenoiserInfo]:
    """Load and check a TorchScript denoiser from a path (or take a ScriptModule).

    Returns the module (in eval mode, on the CPU) and its :class:`DenoiserInfo`.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"denoiser file not found: {path}")
        try:
            module = torch.jit.load(path, map_location="cpu")
        except Exception as error:
            raise DenoiserContractError(
                f"{path} is not a TorchScript file (torch.jit.load failed: {str(error).splitlines()[0]})"
            ) from error
        where = path
    elif isinstance(source, torch.jit.ScriptModule):
        module, where = source, "denoiser module"
    else:
        raise DenoiserContractError(
            f"denoiser must be a path to a TorchScript file or a torch.jit.ScriptModule; got {type(source).__name__}"
        )
    info = check_denoiser(module, where, strict=strict)
    if _FORWARD_CHECKED.get(module) != info:
        module.eval()
        check_forward(module, info, where)
        _FORWARD_CHECKED[module] = info
    return module, info


#: Modules whose forward pass was checked, with what they declared then: the sampler hands one
#: denoiser to the System, the force and the reporter, and each would run a test forward again.
#: (The declarations are cheap and read every time, so a module changed since is checked anew.)
_FORWARD_CHECKED: "weakref.WeakKeyDictionary[torch.jit.ScriptModule, DenoiserInfo]" = weakref.WeakKeyDictionary()


def module_to_bytes(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def module_from_bytes(data: bytes) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(data), map_location="cpu")
