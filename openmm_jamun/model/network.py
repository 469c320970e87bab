"""The JAMUN denoiser: an SE(3)-equivariant, NequIP-like message-passing network (e3nn).

x̂(y) = c_skip·y + c_out·F(c_in·y, c_noise) on mean-centred coordinates
(docs/design.md), with

    c_in = 1/√(A+6σ²),  c_skip = A/(A+6σ²),  c_out = √(A·6σ²/(A+6σ²)),  c_noise = ¼·ln σ  (σ in nm, natural log)

and A the mean squared distance of atom pairs within the radial cutoff.

Graph: covalent bonds plus every pair closer than ``cutoff`` (nm, measured on
y itself, before the c_in scaling) within the same molecule/chain; edge
features are a bonded/non-bonded embedding and a Gaussian radial basis of the
c_in-scaled distance with a smooth cutoff.

SE(3), not E(3): every l = 1 feature is labelled even parity ("1e"), so the
network cannot be forced to mirror its output when its input is mirrored
and can tell an L-peptide from its mirror image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Tuple

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from e3nn.util.jit import compile_mode

from .featurize import ATOM_NAMES, ELEMENTS, RESIDUES


@dataclass
class NetworkConfig:
    """Size of the network. The default trains on 2 CPU cores; ``published()`` is the paper's size."""

    hidden_scalars: int = 48
    hidden_vectors: int = 16
    num_layers: int = 4
    element_dim: int = 8
    atom_name_dim: int = 16
    residue_dim: int = 32
    bond_dim: int = 8
    num_basis: int = 16
    radial_hidden: int = 48
    cutoff: float = 1.0  # nm, on y
    # "channelwise" (NequIP's uvu product + linear mix; ~20x cheaper to train on CPUs) or
    # "fully_connected" (the published JAMUN convolution).
    tensor_product: str = "channelwise"

    @classmethod
    def published(cls) -> "NetworkConfig":
        """The capped-2AA model of the JAMUN paper: 120x0e + 32x1e, 5 blocks, 64 edge features,
        fully connected tensor products."""
        return cls(hidden_scalars=120, hidden_vectors=32, num_layers=5, element_dim=8, atom_name_dim=8,
                   residue_dim=32, bond_dim=32, num_basis=32, radial_hidden=64, cutoff=1.0,
                   tensor_product="fully_connected")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network config key(s): {sorted(unknown)}")
        return cls(**data)


def normalization_factors(sigma: float, A: float) -> Tuple[float, float, float, float]:
    """(c_in, c_skip, c_out, c_noise) of the JAMUN parametrisation, D = 3."""
    B = 6.0 * sigma**2
    return 1.0 / math.sqrt(A + B), A / (A + B), math.sqrt(A * B / (A + B)), 0.25 * math.log(sigma)


def radial_basis(length: torch.Tensor, cutoff: float, num_basis: int) -> torch.Tensor:
    """Gaussians centred on a grid inside (0, cutoff), times a cosine envelope that takes
    them smoothly to 0 at the cutoff (bonded pairs past it keep only their bond feature)."""
    centers = torch.linspace(0.0, cutoff, num_basis + 2, dtype=length.dtype, device=length.device)[1:-1]
    width = cutoff / (num_basis + 1)
    gaussians = torch.exp(-(((length.unsqueeze(-1) - centers) / width) ** 2))
    envelope = 0.5 * (torch.cos(math.pi * length / cutoff) + 1.0) * (length < cutoff).to(length.dtype)
    return gaussians * envelope.unsqueeze(-1)


@compile_mode("script")
class MessagePassingBlock(torch.nn.Module):
    """NequIP-style interaction: a channel-wise ("uvu") tensor product of neighbour features with
    the edge harmonics, its weights from a radial MLP of the edge features; mean aggregation;
    a linear mix of channels; gated nonlinearity; plus a linear self-interaction (residual).

    Channel-wise weights (tens per edge rather than thousands for a fully connected product)
    keep training affordable on CPUs."""

    def __init__(self, irreps_in, irreps_out, irreps_sh, edge_dim: int, radial_hidden: int,
                 tensor_product: str = "channelwise"):
        super().__init__()
        irreps_in, irreps_out, irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_out), o3.Irreps(irreps_sh)
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
        self.gate = Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        if tensor_product == "channelwise":
            wanted = {ir for _, ir in self.gate.irreps_in}
            mid, instructions = [], []
            for i, (mul, ir_in) in enumerate(irreps_in):
                for j, (_, ir_edge) in enumerate(irreps_sh):
                    for ir_out in ir_in * ir_edge:
                        if ir_out in wanted:
                            instructions.append((i, j, len(mid), "uvu", True))
                            mid.append((mul, ir_out))
            mid_sorted, permutation, _ = o3.Irreps(mid).sort()
            instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
            self.tp = o3.TensorProduct(irreps_in, irreps_sh, mid_sorted, instructions,
                                       shared_weights=False, internal_weights=False)
            self.mix = o3.Linear(mid_sorted.simplify(), self.gate.irreps_in)
        elif tensor_product == "fully_connected":  # the published JAMUN convolution
            self.tp = o3.FullyConnectedTensorProduct(irreps_in, irreps_sh, self.gate.irreps_in,
                                                     shared_weights=False, internal_weights=False)
            self.mix = o3.Linear(self.gate.irreps_in, self.gate.irreps_in)
        else:
            raise ValueError(f"tensor_product must be 'channelwise' or 'fully_connected'; got {tensor_product!r}")
        self.radial = FullyConnectedNet([edge_dim, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.self_interaction = o3.Linear(irreps_in, irreps_out)

    def forward(self, x: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor, edge_sh: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        messages = self.tp(x[edge_src], edge_sh, self.radial(edge_attr))
        total = torch.zeros(x.shape[0], messages.shape[1], dtype=x.dtype, device=x.device)
        total = total.index_add(0, edge_dst, messages)
        count = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        count = count.index_add(0, edge_dst, torch.ones_like(edge_dst, dtype=x.dtype))
        mean = total / count.clamp(min=1.0).unsqueeze(-1)
        return self.self_interaction(x) + self.gate(self.mix(mean))


@compile_mode("script")
class JamunNet(torch.nn.Module):
    """F(c_in·y, c_noise): atom features + geometry → one l = 1 vector per atom."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.num_basis = config.num_basis
        embed_dim = config.element_dim + config.atom_name_dim + config.residue_dim
        self.element_embedding = torch.nn.Embedding(len(ELEMENTS), config.element_dim)
        self.atom_name_embedding = torch.nn.Embedding(len(ATOM_NAMES), config.atom_name_dim)
        self.residue_embedding = torch.nn.Embedding(len(RESIDUES), config.residue_dim)
        self.noise_embedding = torch.nn.Linear(1, embed_dim)  # noise conditioning on c_noise
        self.bond_embedding = torch.nn.Embedding(2, config.bond_dim)
        self.sh = o3.SphericalHarmonics("1x0e + 1x1e", normalize=True, normalization="component", irreps_in="1x1e")
        hidden = o3.Irreps(f"{config.hidden_scalars}x0e + {config.hidden_vectors}x1e")
        edge_dim = config.bond_dim + config.num_basis
        irreps = [o3.Irreps(f"{embed_dim}x0e")] + [hidden] * config.num_layers
        self.layers = torch.nn.ModuleList(
            MessagePassingBlock(irreps[i], irreps[i + 1], self.sh.irreps_out, edge_dim, config.radial_hidden,
                                config.tensor_product)
            for i in range(config.num_layers)
        )
        self.output = o3.Linear(hidden, "1x1e")
        # Starts the denoiser at x̂ = c_skip·y, as the published model does.
        self.output_gain = torch.nn.Parameter(torch.zeros(()))

    def forward(self, pos: torch.Tensor, element: torch.Tensor, atom_name: torch.Tensor, residue: torch.Tensor,
                edge_src: torch.Tensor, edge_dst: torch.Tensor, edge_bonded: torch.Tensor, c_noise: float,
                cutoff: float) -> torch.Tensor:
        edge_vec = pos[edge_src] - pos[edge_dst]
        radial = radial_basis(torch.linalg.vector_norm(edge_vec, dim=1), cutoff, self.num_basis)
        edge_attr = torch.cat([self.bond_embedding(edge_bonded), radial], dim=1)
        edge_sh = self.sh(edge_vec)
        noise = torch.full((1, 1), c_noise, dtype=pos.dtype, device=pos.device)
        x = torch.cat(
            [self.element_embedding(element), self.atom_name_embedding(atom_name), self.residue_embedding(residue)],
            dim=1,
        ) + self.noise_embedding(noise)
        for layer in self.layers:
            x = layer(x, edge_src, edge_dst, edge_sh, edge_attr)
        return self.output(x) * self.output_gain


def pair_distances(pos: torch.Tensor) -> torch.Tensor:
    # The default cdist mode goes through a matrix product and is inexact.
    return torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")


def graph_edges(pos: torch.Tensor, graph_index: torch.Tensor, bond_adjacency: torch.Tensor,
                cutoff: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges of a batch of molecules: bonds ∪ pairs within ``cutoff``, never across molecules.

    Returns (src, dst, bonded) with messages flowing src → dst.
    """
    same = graph_index.unsqueeze(0) == graph_index.unsqueeze(1)
    mask = ((pair_distances(pos) < cutoff) | bond_adjacency) & same
    mask.fill_diagonal_(False)
    index = mask.nonzero()
    dst, src = index[:, 0], index[:, 1]
    return src, dst, bond_adjacency[dst, src].long()


def chain_edges(pos: torch.Tensor, bond_adjacency: torch.Tensor,
                cutoff: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges of K copies of one molecule, ``pos`` of shape [K, n, 3]: the same edges as
    :func:`graph_edges` without an (Kn)² distance matrix. Indices are into pos.view(-1, 3)."""
    n = pos.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=pos.device)
    mask = ((pair_distances(pos) < cutoff) | bond_adjacency.unsqueeze(0)) & ~eye.unsqueeze(0)
    index = mask.nonzero()
    chain, dst, src = index[:, 0], index[:, 1], index[:, 2]
    return chain * n + src, chain * n + dst, bond_adjacency[dst, src].long()


@compile_mode("script")
class Denoiser(torch.nn.Module):
    """x̂(y) with the JAMUN normalisation around :class:`JamunNet`; trainable, topology-agnostic."""

    def __init__(self, config: NetworkConfig, sigma: float, average_squared_distance: float):
        super().__init__()
        if not sigma > 0 or not average_squared_distance > 0:
            raise ValueError("sigma and average_squared_distance must be positive")
        self.config = config
        self.net = JamunNet(config)
        self.sigma = float(sigma)
        self.average_squared_distance = float(average_squared_distance)
        self.cutoff = float(config.cutoff)
        self.c_in, self.c_skip, self.c_out, self.c_noise = normalization_factors(self.sigma, self.average_squared_distance)

    def denoise_centered(self, y: torch.Tensor, element: torch.Tensor, atom_name: torch.Tensor,
                         residue: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                         edge_bonded: torch.Tensor) -> torch.Tensor:
        """c_skip·y + c_out·F(c_in·y) for mean-centred y, flat [N, 3]."""
        out = self.net(self.c_in * y, element, atom_name, residue, edge_src, edge_dst, edge_bonded,
                       self.c_noise, self.c_in * self.cutoff)
        return self.c_skip * y + self.c_out * out

    def forward(self, y: torch.Tensor, element: torch.Tensor, atom_name: torch.Tensor, residue: torch.Tensor,
                graph_index: torch.Tensor, bond_adjacency: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """x̂ for a batch of molecules (``graph_index`` says which atom belongs to which)."""
        counts = torch.zeros(num_graphs, dtype=y.dtype, device=y.device).index_add(
            0, graph_index, torch.ones_like(graph_index, dtype=y.dtype))
        mean = torch.zeros(num_graphs, 3, dtype=y.dtype, device=y.device).index_add(0, graph_index, y)
        mean = (mean / counts.unsqueeze(1))[graph_index]
        yc = y - mean
        src, dst, bonded = graph_edges(yc, graph_index, bond_adjacency, self.cutoff)
        out = self.denoise_centered(yc, element, atom_name, residue, src, dst, bonded)
        out_mean = torch.zeros(num_graphs, 3, dtype=y.dtype, device=y.device).index_add(0, graph_index, out)
        out_mean = (out_mean / counts.unsqueeze(1))[graph_index]
        return out - out_mean + mean


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


#: How a network's output becomes the jump: "direct" (F gives x̂) or "energy" (a scalar E_θ, x̂ = y − σ²∇E_θ).
PARAMETRIZATIONS = ("direct", "energy")


def input_gradient(energy: torch.Tensor, y: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """∇_y of a scalar ``energy`` (``y`` must require grad)."""
    grad = torch.autograd.grad([energy], [y], create_graph=create_graph)[0]
    if grad is None:  # the energy does not depend on y at all
        return torch.zeros_like(y)
    return grad


def bond_stretch_energy(y: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, limit: float,
                        sigma: float) -> torch.Tensor:
    """(r − limit)²/(4σ²) for each bond (src[i], dst[i]) of y longer than ``limit``, else 0 (kT)."""
    # clamped below at the limit: no gradient (and no 0/0 at r = 0) where the term is 0
    length = ((y[src] - y[dst]) ** 2).sum(dim=-1).clamp(min=limit**2).sqrt()
    return (length - limit) ** 2 / (4.0 * sigma**2)


@compile_mode("script")
class EnergyDenoiser(Denoiser):
    """The conservative (energy-parametrised) denoiser of JAMUN: a scalar energy, in kT,

        E_θ(y) = ‖g(y) − y‖² / (2σ²)     (per molecule)

    with g the direct denoiser of :class:`Denoiser` (same weights, same state_dict keys, so
    g starts from a direct model's weights), and the jump x̂(y) = y − σ²∇_y E_θ(y) =
    g − J_gᵀ(g − y): the score −∇E_θ is a gradient field by construction.

    With ``bond_limit`` L > 0 (nm) every covalent bond of y longer than L adds

        (r − L)² / (4σ²)     (kT)

    to E_θ: the Gaussian tail of a noised bond (the bond vector of y carries noise of variance
    2σ² per component), held below the true tail by starting at L rather than at the bond's
    length. Noised training data rarely reach it (L = 0.3 nm is ≥ 2 noise widths σ√2 past every
    heavy-atom bond of the standard residues, the C–S bond included), so the network learns the
    density as before; a walk that wanders past the data, where the learned term alone goes flat
    (g follows y, J_g → I), is pulled back. 0 is JAMUN's form unchanged.

    E_θ is invariant under rotations and translations of y (g is SE(3)-equivariant and
    translation-equivariant after centring) but not under a mirror (g is not E(3)).
    ``forward`` keeps :class:`Denoiser`'s signature and returns x̂, so the denoising loss is
    unchanged; training through it is double backpropagation.
    """

    parametrization = "energy"

    def __init__(self, config: NetworkConfig, sigma: float, average_squared_distance: float,
                 bond_limit: float = 0.0):
        super().__init__(config, sigma, average_squared_distance)
        if not bond_limit >= 0.0:
            raise ValueError(f"bond_limit must be >= 0 nm (0: none); got {bond_limit}")
        self.bond_limit = float(bond_limit)

    def energy(self, y: torch.Tensor, element: torch.Tensor, atom_name: torch.Tensor, residue: torch.Tensor,
               graph_index: torch.Tensor, bond_adjacency: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """E_θ of each molecule of a batch, shape [num_graphs] (kT)."""
        counts = torch.zeros(num_graphs, dtype=y.dtype, device=y.device).index_add(
            0, graph_index, torch.ones_like(graph_index, dtype=y.dtype))
        mean = torch.zeros(num_graphs, 3, dtype=y.dtype, device=y.device).index_add(0, graph_index, y)
        yc = y - (mean / counts.unsqueeze(1))[graph_index]
        src, dst, bonded = graph_edges(yc.detach(), graph_index, bond_adjacency, self.cutoff)
        g = self.denoise_centered(yc, element, atom_name, residue, src, dst, bonded)
        g_mean = torch.zeros(num_graphs, 3, dtype=y.dtype, device=y.device).index_add(0, graph_index, g)
        residual = g - (g_mean / counts.unsqueeze(1))[graph_index] - yc  # g(y) − y
        per_atom = (residual**2).sum(-1)
        energy = torch.zeros(num_graphs, dtype=y.dtype, device=y.device).index_add(
            0, graph_index, per_atom) / (2.0 * self.sigma**2)
        if self.bond_limit > 0.0:
            pairs = torch.triu(bond_adjacency, diagonal=1).nonzero()
            stretch = bond_stretch_energy(yc, pairs[:, 0], pairs[:, 1], self.bond_limit, self.sigma)
            energy = energy.index_add(0, graph_index[pairs[:, 0]], stretch)
        return energy

    def forward(self, y: torch.Tensor, element: torch.Tensor, atom_name: torch.Tensor, residue: torch.Tensor,
                graph_index: torch.Tensor, bond_adjacency: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """x̂ = y − σ²∇E_θ for a batch; differentiable in the weights (and in y) when grad is enabled."""
        create_graph = torch.is_grad_enabled()
        torch.ops.aten.set_grad_enabled(True)
        yy = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
        energy = self.energy(yy, element, atom_name, residue, graph_index, bond_adjacency, num_graphs).sum()
        grad = input_gradient(energy, yy, create_graph)
        torch.ops.aten.set_grad_enabled(create_graph)
        return (yy if create_graph else y) - self.sigma**2 * grad


def build_denoiser(parametrization: str, config: NetworkConfig, sigma: float,
                   average_squared_distance: float, bond_limit: float = 0.0) -> Denoiser:
    """A fresh :class:`Denoiser` ("direct") or :class:`EnergyDenoiser` ("energy", with its
    ``bond_limit``; a direct model has no energy to add it to)."""
    if parametrization == "direct":
        if bond_limit:
            raise ValueError("bond_limit is a term of an energy model's E_θ; a direct model has none")
        return Denoiser(config, sigma, average_squared_distance)
    if parametrization == "energy":
        return EnergyDenoiser(config, sigma, average_squared_distance, bond_limit)
    raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}; got {parametrization!r}")


def parametrization_of(denoiser: torch.nn.Module) -> str:
    return "energy" if isinstance(denoiser, EnergyDenoiser) else "direct"
