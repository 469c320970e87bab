"""Training data: heavy-atom frames (nm) of many peptides, batched as graphs.

Trajectories are read with mdtraj; every peptide keeps its own topology
features. Splits are by peptide, never by frame: frames of one trajectory
are strongly correlated, so a frame split would leak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..model.featurize import TopologyFeatures, featurize
from .md import SIDECAR_FILE, load_md_frames


@dataclass
class PeptideFrames:
    name: str
    features: TopologyFeatures
    frames: np.ndarray  # float32 [T, n, 3], nm

    @property
    def num_atoms(self) -> int:
        return self.features.num_atoms


def load_peptide(md_dir: str, stride: int = 1, name: str | None = None) -> PeptideFrames:
    """Heavy-atom frames of one reference-MD directory (``jamun md`` output)."""
    traj = load_md_frames(md_dir, heavy_atoms_only=True, stride=stride)
    features = featurize(traj.topology)
    return PeptideFrames(name or os.path.basename(os.path.normpath(md_dir)), features,
                         traj.xyz.astype(np.float32))


def find_peptides(root: str) -> list[str]:
    """Names of the MD directories under ``root`` (those with an md.json sidecar)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data directory not found: {root}")
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, SIDECAR_FILE)))


def split_by_peptide(names, val_names=None, val_fraction: float = 0.2, seed: int = 0):
    """(train, val) lists of peptide names; explicit ``val_names`` win over a random fraction."""
    names = sorted(names)
    if val_names is not None:
        missing = sorted(set(val_names) - set(names))
        if missing:
            raise ValueError(f"validation peptide(s) not in the data: {missing}")
        val = sorted(val_names)
    else:
        rng = np.random.default_rng(seed)
        count = max(1, int(round(val_fraction * len(names))))
        val = sorted(rng.choice(names, size=count, replace=False).tolist())
    train = [n for n in names if n not in val]
    if not train:
        raise ValueError("no peptides left for training after the validation split")
    return train, val


def average_squared_distance(peptides: list[PeptideFrames], cutoff: float, max_frames: int = 200) -> float:
    """A: mean squared distance (nm²) of atom pairs within ``cutoff`` in mean-centred frames."""
    total, count = 0.0, 0
    for peptide in peptides:
        step = max(1, len(peptide.frames) // max_frames)
        x = peptide.frames[::step].astype(np.float64)
        d2 = ((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1)
        mask = (d2 < cutoff**2) & ~np.eye(peptide.num_atoms, dtype=bool)[None]
        total += d2[mask].sum()
        count += mask.sum()
    if count == 0:
        raise ValueError("no atom pairs within the cutoff: cannot estimate A")
    return float(total / count)


@dataclass
class GraphBatch:
    positions: torch.Tensor  # [N, 3] clean, nm
    element: torch.Tensor
    atom_name: torch.Tensor
    residue: torch.Tensor
    graph_index: torch.Tensor  # [N]
    bond_adjacency: torch.Tensor  # [N, N] bool, block diagonal
    num_graphs: int

    def to(self, device) -> "GraphBatch":
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return GraphBatch(**fields)


def make_batch(items: list[tuple[PeptideFrames, int]]) -> GraphBatch:
    """Batch (peptide, frame index) pairs into one graph batch."""
    sizes = [p.num_atoms for p, _ in items]
    total = sum(sizes)
    adjacency = torch.zeros(total, total, dtype=torch.bool)
    offset = 0
    for (peptide, _), size in zip(items, sizes):
        bonds = torch.as_tensor(peptide.features.bonds) + offset
        adjacency[bonds[0], bonds[1]] = True
        adjacency[bonds[1], bonds[0]] = True
        offset += size
    cat = lambda arrays: torch.as_tensor(np.concatenate(arrays))  # noqa: E731
    return GraphBatch(
        positions=cat([p.frames[i] for p, i in items]),
        element=cat([p.features.element for p, _ in items]),
        atom_name=cat([p.features.atom_name for p, _ in items]),
        residue=cat([p.features.residue for p, _ in items]),
        graph_index=torch.arange(len(items)).repeat_interleave(torch.as_tensor(sizes)),
        bond_adjacency=adjacency,
        num_graphs=len(items),
    )


BALANCES = ("frames", "peptides")


class FrameSampler:
    """Draws batches of (peptide, frame) from a torch Generator whose state goes into checkpoints
    (so a resumed run draws what the uninterrupted one would).

    ``balance="frames"`` draws uniformly over all frames (long trajectories weigh more);
    ``balance="peptides"`` draws a peptide uniformly, then one of its frames, so a data set of
    unequal trajectory lengths is seen as if every peptide had the same length.
    """

    def __init__(self, peptides: list[PeptideFrames], seed: int, balance: str = "frames"):
        if not peptides:
            raise ValueError("no peptides to sample from")
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, not {balance!r}")
        self.peptides = peptides
        self.balance = balance
        self.lengths = np.array([len(p.frames) for p in peptides])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])

    def sample(self, batch_size: int) -> GraphBatch:
        if self.balance == "peptides":
            which = torch.randint(len(self.peptides), (batch_size,), generator=self.generator).numpy()
            u = torch.rand(batch_size, generator=self.generator, dtype=torch.float64).numpy()
            frames = np.minimum((u * self.lengths[which]).astype(np.int64), self.lengths[which] - 1)
            return make_batch([(self.peptides[k], int(f)) for k, f in zip(which, frames)])
        flat = torch.randint(self.num_frames, (batch_size,), generator=self.generator).numpy()
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        return make_batch([(self.peptides[k], int(f - self.offsets[k])) for k, f in zip(which, flat)])
