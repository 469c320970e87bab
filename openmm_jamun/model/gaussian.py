"""The analytic denoiser of Gaussian data: the package's test oracle and demo.

For clean data X ~ N(μ, s² I) and noise σ, E[X | Y = y] = μ + s²/(s²+σ²)·(y − μ).
A walk driven by its score samples Y ~ N(μ, (s²+σ²) I) and the jumps
x̂(Y) ~ N(μ, s⁴/(s²+σ²) I) (docs/design.md, "Checks that need no trained model").
"""

from __future__ import annotations

import numpy as np
import torch
from openmm import app, unit

from .._units import length_nm
from .contract import FORMAT_VERSION


class GaussianDenoiser(torch.nn.Module):
    """x̂(y) = μ + s²/(s²+σ²)·(y − μ), in nm, meeting the denoiser contract."""

    def __init__(self, mu: torch.Tensor, s: float, sigma: float):
        super().__init__()
        mu = torch.as_tensor(mu, dtype=torch.float32)
        if mu.ndim != 2 or mu.shape[1] != 3:
            raise ValueError(f"mu must have shape (N, 3); got {tuple(mu.shape)}")
        self.register_buffer("mu", mu.clone())
        self.sigma = float(sigma)
        self.s = float(s)
        self.num_atoms = int(mu.shape[0])
        self.num_chains = 1
        self.shrink = self.s**2 / (self.s**2 + self.sigma**2)
        self.jamun_format_version = FORMAT_VERSION
        self.jamun_kind = "gaussian"

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        mu = self.mu.to(positions.dtype)
        return mu + self.shrink * (positions - mu)


def gaussian_denoiser(mu, s=0.05 * unit.nanometer, sigma=0.04 * unit.nanometer) -> torch.jit.ScriptModule:
    """A TorchScript export of the analytic Gaussian denoiser.

    ``mu`` is an (N, 3) array in nm (or a Quantity); ``s`` and ``sigma`` are
    lengths (plain numbers are nm).
    """
    if unit.is_quantity(mu):
        mu = mu.value_in_unit(unit.nanometer)
    mu = torch.as_tensor(np.asarray(mu, dtype=np.float32))
    module = GaussianDenoiser(mu, length_nm(s, "s"), length_nm(sigma, "sigma"))
    return torch.jit.script(module)


def gaussian_topology(num_particles: int) -> app.Topology:
    """A Topology of ``num_particles`` unbonded carbon 'atoms', one residue each."""
    topology = app.Topology()
    chain = topology.addChain("A")
    carbon = app.Element.getBySymbol("C")
    for i in range(num_particles):
        residue = topology.addResidue("GSS", chain, id=str(i + 1))
        topology.addAtom("C", carbon, residue)
    return topology


def gaussian_example(num_particles: int = 30, s=0.05 * unit.nanometer, sigma=0.04 * unit.nanometer, seed: int = 0):
    """A ready Gaussian problem: (denoiser, topology, μ as an (N, 3) Quantity in nm).

    μ is spread on a grid 0.5 nm apart so that frames are easy to look at.
    """
    rng = np.random.default_rng(seed)
    side = int(np.ceil(num_particles ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:num_particles]
    mu = 0.5 * grid + 0.01 * rng.standard_normal(grid.shape)
    denoiser = gaussian_denoiser(mu, s, sigma)
    return denoiser, gaussian_topology(num_particles), mu * unit.nanometer
