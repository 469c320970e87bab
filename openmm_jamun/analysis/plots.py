"""Plots (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _frames_label(label: str, frames: int, weights: np.ndarray | None) -> str:
    if weights is None:
        return f"{label} ({frames} frames)"
    return f"{label} ({frames} frames, reweighted: {1.0 / np.sum(weights ** 2):.0f} effective)"


def ramachandran(pairs: dict[str, np.ndarray], path: str, reference: dict[str, np.ndarray] | None = None,
                 title: str = "", labels=("JAMUN", "reference"), weights: np.ndarray | None = None) -> str | None:
    """Log-density Ramachandran plots, one row per residue; sample beside reference if given.
    ``weights`` (normalised, one per sample frame: a metadynamics run's) weight the sample's
    histogram. None (no file) when no residue has both φ and ψ."""
    residues = sorted(pairs, key=int)
    if not residues:
        return None
    plt = _pyplot()
    columns = 2 if reference is not None else 1
    fig, axes = plt.subplots(len(residues), columns, figsize=(4.2 * columns, 3.8 * len(residues)), squeeze=False)
    edges = np.linspace(-180, 180, 61)
    for row, residue in enumerate(residues):
        sets = [(labels[0], pairs[residue], weights)]
        if reference is not None and residue in reference:
            sets.append((labels[1], reference[residue], None))
        for column, (label, angles, frame_weights) in enumerate(sets):
            ax = axes[row, column]
            hist, _, _ = np.histogram2d(*np.degrees(angles).T, bins=[edges, edges], density=True, weights=frame_weights)
            with np.errstate(divide="ignore"):
                image = -np.log(hist.T)
            ax.imshow(image - np.nanmin(image[np.isfinite(image)]) if np.isfinite(image).any() else image,
                      origin="lower", extent=(-180, 180, -180, 180), cmap="viridis_r", vmax=8)
            ax.set_xlabel("φ (deg)")
            ax.set_ylabel("ψ (deg)")
            ax.set_title(f"residue {residue}: " + _frames_label(label, len(angles), frame_weights), fontsize=9)
            ax.set_xticks([-180, -90, 0, 90, 180])
            ax.set_yticks([-180, -90, 0, 90, 180])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tica_densities(samples: np.ndarray, reference: np.ndarray, path: str, labels=("JAMUN", "reference"),
                   weights: np.ndarray | None = None) -> str:
    """TIC0-TIC1 log densities of samples (weighted by ``weights`` if given) and reference on common axes."""
    plt = _pyplot()
    both = np.concatenate([samples[:, :2], reference[:, :2]])
    ranges = [(both[:, i].min(), both[:, i].max()) for i in range(2)]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8), sharex=True, sharey=True)
    for ax, data, label, frame_weights in zip(axes, (samples, reference), labels, (weights, None)):
        hist, xe, ye = np.histogram2d(data[:, 0], data[:, 1], bins=50, range=ranges, density=True,
                                      weights=frame_weights)
        with np.errstate(divide="ignore"):
            free = -np.log(hist.T)
        ax.imshow(free - np.min(free[np.isfinite(free)]), origin="lower", aspect="auto", cmap="viridis_r", vmax=8,
                  extent=(*ranges[0], *ranges[1]))
        ax.set_title(_frames_label(label, len(data), frame_weights), fontsize=9)
        ax.set_xlabel("TIC0")
    axes[0].set_ylabel("TIC1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def state_probabilities(samples: list[float], reference: list[float], path: str,
                        labels=("JAMUN", "reference")) -> str:
    """Bar chart of metastable-state probabilities."""
    plt = _pyplot()
    index = np.arange(len(samples))
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ax.bar(index - 0.2, samples, 0.4, label=labels[0])
    ax.bar(index + 0.2, reference, 0.4, label=labels[1])
    ax.set_xticks(index, [f"state {i}" for i in index])
    ax.set_ylabel("probability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
