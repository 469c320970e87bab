"""TorchScript export of a trained denoiser for one topology (K chains), and training checkpoints."""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import List

import numpy as np
import torch
from e3nn.util.jit import compile as e3nn_compile
from e3nn.util.jit import compile_mode

from .contract import FORMAT_VERSION, load_denoiser
from .featurize import ATOM_NAMES, ELEMENTS, RESIDUES, TopologyFeatures, featurize
from .network import (Denoiser, EnergyDenoiser, NetworkConfig, bond_stretch_energy, build_denoiser, chain_edges,
                      count_parameters, input_gradient, parametrization_of)

CHECKPOINT_FORMAT = "openmm-jamun-checkpoint-1"
# key of a training checkpoint's exponential-moving-average weights (TrainConfig.ema_decay)
EMA_STATE = "ema_state_dict"


def vocabulary() -> dict:
    """The feature vocabularies a model's embeddings are indexed by."""
    return {"elements": list(ELEMENTS), "atom_names": list(ATOM_NAMES), "residues": list(RESIDUES)}


@compile_mode("script")
class ExportedDenoiser(torch.nn.Module):
    """x̂(positions) for K independent copies of one molecule, topology baked in as buffers.

    Meets the contract of docs/design.md: forward(positions[K·n, 3] float32 nm) -> [K·n, 3],
    attributes sigma (nm), num_atoms, plus metadata checked by ``load_denoiser``.
    """

    def __init__(self, denoiser: Denoiser, features: TopologyFeatures, chains: int):
        super().__init__()
        n = features.num_atoms
        self.denoiser = denoiser
        self.sigma = float(denoiser.sigma)
        self.average_squared_distance = float(denoiser.average_squared_distance)
        self.cutoff = float(denoiser.cutoff)
        self.num_chains = int(chains)
        self.atoms_per_chain = int(n)
        self.num_atoms = int(n * chains)
        self.jamun_format_version = FORMAT_VERSION
        self.jamun_kind = "network"
        self.atom_names: List[str] = list(features.atom_names)
        self.atom_elements: List[str] = list(features.atom_elements)
        self.residue_names: List[str] = list(features.residue_names)
        self.register_buffer("element", torch.as_tensor(np.tile(features.element, chains)))
        self.register_buffer("atom_name", torch.as_tensor(np.tile(features.atom_name, chains)))
        self.register_buffer("residue", torch.as_tensor(np.tile(features.residue, chains)))
        adjacency = torch.zeros(n, n, dtype=torch.bool)
        bonds = torch.as_tensor(features.bonds)
        adjacency[bonds[0], bonds[1]] = True
        adjacency[bonds[1], bonds[0]] = True
        self.register_buffer("bond_adjacency", adjacency)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        y = positions.reshape(self.num_chains, self.atoms_per_chain, 3)
        mean = y.mean(dim=1, keepdim=True)
        yc = y - mean
        src, dst, bonded = chain_edges(yc, self.bond_adjacency, self.cutoff)
        out = self.denoiser.denoise_centered(yc.reshape(-1, 3), self.element, self.atom_name, self.residue,
                                             src, dst, bonded).reshape(self.num_chains, self.atoms_per_chain, 3)
        out = out - out.mean(dim=1, keepdim=True) + mean
        return out.reshape(-1, 3)


@compile_mode("script")
class ExportedEnergyDenoiser(ExportedDenoiser):
    """The export of an :class:`~openmm_jamun.model.network.EnergyDenoiser` (``jamun_kind`` "energy").

    Same contract as :class:`ExportedDenoiser` (``forward(positions) -> x̂``, ``sigma``, ``num_atoms``)
    plus ``energy(positions) -> E`` (a 0-dim tensor, kT: the sum of the chains' energies) and
    ``chain_energies(positions) -> [K]``. ``forward`` returns x̂ = y − σ²∇E (one forward and one
    backward pass); it builds a graph through y only when y requires grad and grad mode is on.
    """

    def __init__(self, denoiser: EnergyDenoiser, features: TopologyFeatures, chains: int):
        super().__init__(denoiser, features, chains)
        self.jamun_kind = "energy"
        self.bond_limit = float(denoiser.bond_limit)
        bonds = torch.as_tensor(features.bonds, dtype=torch.long)  # [2, B] within one chain
        offsets = (torch.arange(chains) * features.num_atoms).unsqueeze(1)  # [K, 1]: chain-major, like energies
        self.register_buffer("bond_src", (offsets + bonds[0]).reshape(-1))
        self.register_buffer("bond_dst", (offsets + bonds[1]).reshape(-1))
        self.bonds_per_chain = int(bonds.shape[1])

    @torch.jit.export
    def chain_energies(self, positions: torch.Tensor) -> torch.Tensor:
        """E_θ of each chain, shape [K] (kT)."""
        y = positions.reshape(self.num_chains, self.atoms_per_chain, 3)
        yc = y - y.mean(dim=1, keepdim=True)
        src, dst, bonded = chain_edges(yc.detach(), self.bond_adjacency, self.cutoff)
        g = self.denoiser.denoise_centered(yc.reshape(-1, 3), self.element, self.atom_name, self.residue,
                                           src, dst, bonded).reshape(self.num_chains, self.atoms_per_chain, 3)
        residual = g - g.mean(dim=1, keepdim=True) - yc  # g(y) − y
        energies = (residual**2).sum(dim=(1, 2)) / (2.0 * self.sigma**2)
        if self.bond_limit > 0.0:
            stretch = bond_stretch_energy(yc.reshape(-1, 3), self.bond_src, self.bond_dst, self.bond_limit,
                                          self.sigma)  # [K·B]
            energies = energies + stretch.reshape(self.num_chains, self.bonds_per_chain).sum(dim=1)
        return energies

    @torch.jit.export
    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """E_θ(y) of all chains together (0-dim tensor, kT)."""
        return self.chain_energies(positions).sum()

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        create_graph = positions.requires_grad and torch.is_grad_enabled()
        was_enabled = torch.is_grad_enabled()
        torch.ops.aten.set_grad_enabled(True)
        y = positions if create_graph else positions.detach().requires_grad_(True)
        grad = input_gradient(self.energy(y), y, create_graph)
        torch.ops.aten.set_grad_enabled(was_enabled)
        return (y if create_graph else positions) - self.sigma**2 * grad


def export_denoiser(denoiser: Denoiser, topology, chains: int = 1, path=None,
                    heavy_atoms_only: bool = True) -> torch.jit.ScriptModule:
    """Script ``denoiser`` for ``topology`` (OpenMM or mdtraj) with ``chains`` copies; optionally save it.
    An :class:`EnergyDenoiser` exports as kind "energy" (with ``energy(positions)``), a
    :class:`Denoiser` as kind "network"."""
    if int(chains) < 1:
        raise ValueError(f"chains must be >= 1; got {chains}")
    features = featurize(topology, heavy_atoms_only=heavy_atoms_only)
    # A frozen copy: the export never builds autograd graphs, and training can go on.
    denoiser = copy.deepcopy(denoiser).eval().requires_grad_(False)
    exported = ExportedEnergyDenoiser if isinstance(denoiser, EnergyDenoiser) else ExportedDenoiser
    module = exported(denoiser, features, int(chains)).eval()
    scripted = e3nn_compile(module)  # scripts e3nn's modules their own way, then ours
    if not isinstance(scripted, torch.jit.ScriptModule):
        raise RuntimeError("TorchScript export failed: the compiled module is not a ScriptModule")
    if path is not None:
        torch.jit.save(scripted, os.fspath(path))
        scripted, _ = load_denoiser(os.fspath(path))
    return scripted


def save_checkpoint(path, denoiser: Denoiser, **extra) -> None:
    """Weights + config + A + σ (+ training state in ``extra``): tensors and plain data only."""
    record = {
        "format": CHECKPOINT_FORMAT,
        "config": denoiser.config.to_dict(),
        "parametrization": parametrization_of(denoiser),
        "sigma": denoiser.sigma,
        "average_squared_distance": denoiser.average_squared_distance,
        "bond_limit_nm": getattr(denoiser, "bond_limit", 0.0),
        "state_dict": denoiser.state_dict(),
        "vocabulary": vocabulary(),
        **extra,
    }
    tmp = os.fspath(path) + ".tmp"
    torch.save(record, tmp)
    os.replace(tmp, os.fspath(path))  # a checkpoint is whole or absent


def checkpoint_record(path) -> dict | None:
    """The contents of a training checkpoint (``torch.load(weights_only=True)``: no arbitrary
    unpickling), or None when ``path`` is something else (a TorchScript export, not torch's at all)."""
    with warnings.catch_warnings():  # torch warns when handed a TorchScript archive; that is an answer here
        warnings.simplefilter("ignore")
        try:
            record = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        except Exception:
            return None
    return record if isinstance(record, dict) and record.get("format") == CHECKPOINT_FORMAT else None


def load_checkpoint(path, averaged: bool = False, parametrization: str | None = None) -> tuple[Denoiser, dict]:
    """Rebuild the Denoiser of a checkpoint (``torch.load(weights_only=True)``: no arbitrary unpickling);
    with ``averaged``, its EMA weights where the run kept them (what sampling and releases use).

    The class follows the checkpoint's ``parametrization`` ("direct" when absent: checkpoints from
    before it was recorded): :class:`Denoiser` or :class:`EnergyDenoiser`. ``parametrization``
    overrides it: "energy" on a direct checkpoint gives E = ‖g − y‖²/2σ² with g its network (the
    weights are the same tensors), the start of a conservative fine-tune."""
    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    record = checkpoint_record(path)
    if record is None:
        raise ValueError(f"{path} is not an openmm-jamun training checkpoint")
    if record.get("vocabulary", vocabulary()) != vocabulary():
        raise ValueError(f"{path} was trained with another feature vocabulary than this openmm-jamun's")
    kind = parametrization or record.get("parametrization", "direct")
    denoiser = build_denoiser(kind, NetworkConfig.from_dict(record["config"]), record["sigma"],
                              record["average_squared_distance"],
                              record.get("bond_limit_nm", 0.0) if kind == "energy" else 0.0)
    denoiser.load_state_dict(record[EMA_STATE] if averaged and EMA_STATE in record else record["state_dict"])
    return denoiser, record


def write_release(checkpoint, model_path, card: dict) -> dict:
    """Ship a trained checkpoint: weights, config, A, σ and vocabulary only (no optimizer state)
    at ``model_path``, and its card (JSON) beside it with the same stem."""
    denoiser, record = load_checkpoint(checkpoint, averaged=True)
    keep = {k: record[k] for k in ("step", "best_val_loss", "train", "val", "train_frames", "ema_decay") if k in record}
    # what the weights are: never taken from the extra fields, which describe them (evaluation, hardware)
    measured = {
        "format": CHECKPOINT_FORMAT,
        "export_format_version": FORMAT_VERSION,
        "parametrization": parametrization_of(denoiser),
        "sigma_nm": denoiser.sigma,
        "average_squared_distance_nm2": denoiser.average_squared_distance,
        "bond_limit_nm": getattr(denoiser, "bond_limit", 0.0),
        "parameters": count_parameters(denoiser),
        "config": denoiser.config.to_dict(),
        "vocabulary": vocabulary(),
    }
    clash = sorted(set(card) & (set(measured) | set(keep)))
    if clash:
        raise ValueError(f"the card's extra fields {clash} would overwrite what the checkpoint records")
    save_checkpoint(model_path, denoiser, **keep)
    card = {**measured, **keep, "released_from": f"{os.path.basename(os.fspath(checkpoint))} at step "
                                                 f"{record.get('step')}", **card}
    card_path = os.path.splitext(os.fspath(model_path))[0] + ".json"
    with open(card_path, "w") as handle:
        json.dump(card, handle, indent=2)
    return card


__all__ = ["ExportedDenoiser", "ExportedEnergyDenoiser", "export_denoiser", "save_checkpoint", "load_checkpoint", "count_parameters",
           "write_release", "vocabulary"]
