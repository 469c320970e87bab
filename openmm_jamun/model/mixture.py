"""An analytic energy-parametrised denoiser: every atom an independent Gaussian mixture.

Clean data: each atom i independently, x_i ~ Σ_k w_k N(μ_ki, s_k² I₃). With noise σ,
v_k = s_k² + σ², the noised density and the posterior mean are closed-form:

    p_Y(y) = Π_i Σ_k w_k N(y_i; μ_ki, v_k I₃)
    E(y)   = −log p_Y(y)                                   (kT, normalised: exact)
    x̂(y)  = E[x | y] = Σ_k r_ik(y) [μ_ki + (s_k²/v_k)(y_i − μ_ki)],   r_ik ∝ w_k N(y_i; μ_ki, v_k I₃)

and x̂ = y − σ²∇E exactly (Tweedie). Unlike the Gaussian oracle
(:mod:`openmm_jamun.model.gaussian`), this density is not Gaussian, so BAOAB does not sample it
exactly at a finite step: it is the package's test of the Metropolis walk and of real energies.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from openmm import unit

from .._units import length_nm, to_plain
from .contract import FORMAT_VERSION
from .gaussian import gaussian_topology


class GaussianMixtureDenoiser(torch.nn.Module):
    """Posterior mean and energy −log p_Y of independent per-atom Gaussian mixtures (kind "mixture")."""

    def __init__(self, means: torch.Tensor, widths, weights, sigma: float):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 3 or means.shape[2] != 3:
            raise ValueError(f"means must have shape (components, atoms, 3); got {tuple(means.shape)}")
        widths = torch.as_tensor(widths, dtype=torch.float64).reshape(-1)
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        components = means.shape[0]
        if widths.numel() != components or weights.numel() != components:
            raise ValueError("widths and weights need one value per component")
        if bool((widths < 0).any()) or bool((weights <= 0).any()) or not sigma > 0:
            raise ValueError("widths must be >= 0, weights and sigma > 0")
        weights = weights / weights.sum()
        variance = widths**2 + sigma**2
        self.register_buffer("means", means.clone())  # [C, N, 3]
        self.register_buffer("variance", variance)  # v_k
        self.register_buffer("shrink", widths**2 / variance)  # s_k² / v_k
        # log w_k − (3/2) log(2π v_k): the normalisation of each component in R³
        self.register_buffer("log_norm", torch.log(weights) - 1.5 * torch.log(2.0 * math.pi * variance))
        self.sigma = float(sigma)
        self.num_atoms = int(means.shape[1])
        self.num_chains = 1
        self.jamun_format_version = FORMAT_VERSION
        self.jamun_kind = "mixture"

    def _log_terms(self, y: torch.Tensor) -> torch.Tensor:
        """log(w_k N(y_i; μ_ki, v_k)), shape [C, N], in float64."""
        diff = y.to(torch.float64).unsqueeze(0) - self.means
        return self.log_norm.unsqueeze(1) - (diff**2).sum(-1) / (2.0 * self.variance.unsqueeze(1))

    @torch.jit.export
    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """−log p_Y(positions) (kT, 0-dim, in the positions' dtype)."""
        return -torch.logsumexp(self._log_terms(positions), dim=0).sum().to(positions.dtype)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        y = positions.to(torch.float64)
        responsibility = torch.softmax(self._log_terms(positions), dim=0)  # [C, N]
        per_component = self.means + self.shrink.reshape(-1, 1, 1) * (y.unsqueeze(0) - self.means)
        return (responsibility.unsqueeze(-1) * per_component).sum(0).to(positions.dtype)


def gaussian_mixture_denoiser(means, widths, weights, sigma=0.04 * unit.nanometer) -> torch.jit.ScriptModule:
    """A TorchScript export of :class:`GaussianMixtureDenoiser`.

    ``means``: (components, atoms, 3) in nm; ``widths`` s_k >= 0 (nm; 0 is a point mass) and
    ``weights`` w_k > 0 (normalised here), one per component; ``sigma`` a length (plain numbers are nm).
    """
    if unit.is_quantity(means):
        means = means.value_in_unit(unit.nanometer)
    widths = [to_plain(w, unit.nanometer, "width") for w in widths]
    module = GaussianMixtureDenoiser(torch.as_tensor(np.asarray(means, dtype=np.float64)), widths, weights,
                                     length_nm(sigma, "sigma"))
    return torch.jit.script(module)


def mixture_fraction_below(threshold: float, means_x, widths, weights, sigma: float) -> float:
    """P(y_x < threshold) for one atom of the noised mixture (nm): its exact mode population when
    the components' means differ along x."""
    from scipy.stats import norm

    weights = np.asarray(weights, dtype=float) / np.sum(weights)
    return float(sum(w * norm.cdf((threshold - m) / math.sqrt(s**2 + sigma**2))
                     for w, m, s in zip(weights, means_x, widths)))


def mixture_example(num_atoms: int = 2, separation: float = 0.25, widths=(0.0, 0.1), weights=(0.5, 0.5),
                    sigma: float = 0.04, spacing: float = 2.0):
    """A two-mode problem: atom i's modes at (i·spacing, 0, 0) and (i·spacing + separation, 0, 0) nm.

    Returns (denoiser, topology, x0 as an (N, 3) Quantity, info) with ``info`` holding the
    exact population of the first mode under p_Y per atom (``p_first``) and the dividing plane
    offset (``threshold``, nm, relative to each atom's first mode): mode 1 is y_x − i·spacing < threshold.
    """
    origin = np.zeros((num_atoms, 3))
    origin[:, 0] = spacing * np.arange(num_atoms)
    shift = np.array([separation, 0.0, 0.0])
    means = np.stack([origin, origin + shift])
    denoiser = gaussian_mixture_denoiser(means, widths, weights, sigma)
    threshold = separation / 2
    info = {"threshold": threshold, "origin_x": origin[:, 0],
            "p_first": mixture_fraction_below(threshold, [0.0, separation], widths, weights, sigma)}
    return denoiser, gaussian_topology(num_atoms), origin * unit.nanometer, info
