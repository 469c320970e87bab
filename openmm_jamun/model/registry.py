"""The shipped models and their cards: finding a model by name, and what its card says it was trained on.

A model is a name in the package's ``models/`` directory (``default`` is :data:`DEFAULT_MODEL`), a
name in the directory ``$JAMUN_MODELS`` points to, or a path: a training checkpoint (exported for the
peptide at hand) or a TorchScript export. Beside each shipped ``NAME.pt`` lie its card ``NAME.json``
(what the weights are and what they were trained on) and ``NAME.md`` (the model card a person reads).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ..data.build import ONE_TO_THREE
from .contract import load_denoiser
from .export import checkpoint_record, export_denoiser, load_checkpoint
from .featurize import RESIDUE_ALIASES

#: The models shipped inside the package.
PACKAGE_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL = "capped_2aa"


def model_dirs() -> list[Path]:
    """Where model names are looked up: ``$JAMUN_MODELS`` (if set), then the package's own models."""
    extra = os.environ.get("JAMUN_MODELS")
    return ([Path(extra)] if extra else []) + [PACKAGE_MODELS_DIR]


def resolve_model(model: str) -> Path:
    """The file of a model: a path, or a name in :func:`model_dirs` ('default' is :data:`DEFAULT_MODEL`)."""
    if model == "default":
        model = DEFAULT_MODEL
    path = Path(model)
    if path.is_file():
        return path
    candidates = [directory / f"{model}.pt" for directory in model_dirs()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model {model!r} not found: neither a file nor any of "
                            f"{', '.join(map(str, candidates))}")


def model_card(model_path: Path) -> dict | None:
    card = model_path.with_suffix(".json")
    return json.loads(card.read_text()) if card.is_file() else None


def card_sequences(card: dict | None) -> list[str]:
    """The card's training peptides that are one-letter sequences (they are peptide directory names:
    the recipe names them by sequence; another name says nothing about residues or length)."""
    names = card.get("train", []) if card else []
    return [name for name in names if name and all(letter in ONE_TO_THREE for letter in name)]


def untrained_residues(card: dict | None, topology) -> list[str]:
    """Residue types of ``topology`` absent from every training sequence listed in the model card
    (caps ACE/NME count as trained for a capped model). Empty when the card lists no training sequence."""
    sequences = card_sequences(card)
    if not sequences:
        return []
    trained = {ONE_TO_THREE[letter] for sequence in sequences for letter in sequence}
    trained |= {"ACE", "NME"}
    present = {RESIDUE_ALIASES.get(r.name, r.name) for r in topology.residues() if r.name != "HOH"}
    return sorted(present - trained)


def training_lengths(card: dict | None) -> list[int]:
    """Peptide lengths (residues, caps not counted) of the training sequences the card lists."""
    return sorted({len(sequence) for sequence in card_sequences(card)})


def untrained_length(card: dict | None, topology) -> int | None:
    """The number of residues of ``topology`` (caps and water not counted) when no training
    sequence in the model card has that length, else None. A denoiser trained on dipeptides
    alone can jump a noised capped single residue worse than the noise left it."""
    trained = training_lengths(card)
    length = sum(1 for r in topology.residues() if r.name not in ("ACE", "NME", "HOH"))
    return None if not trained or length in trained else length


def untrained_termini(card: dict | None, topology) -> str | None:
    """'uncapped' or 'capped' when the peptide's termini differ from those of the training peptides
    (the card's ``caps``), else None."""
    if not card or "caps" not in card:
        return None
    names = {r.name for r in topology.residues()}
    capped = "ACE" in names and "NME" in names
    return None if capped == bool(card["caps"]) else ("capped" if capped else "uncapped")


def warn_if_untrained(model_path: Path, card: dict | None, topology, stacklevel: int = 3):
    """Warn about residue types, a peptide length and termini that no training sequence of the model
    card has; returns (untrained residue names, untrained length or None)."""
    termini = untrained_termini(card, topology)
    if termini is not None:
        trained = "capped (ACE-...-NME)" if card["caps"] else "uncapped (zwitterionic)"
        warnings.warn(f"{model_path.name} was trained on {trained} peptides only; this one is {termini}: "
                      "expect poorer samples", stacklevel=stacklevel)
    untrained = untrained_residues(card, topology)
    if untrained:
        warnings.warn(f"{model_path.name} was not trained on residue type(s) {', '.join(untrained)} "
                      "(see its card's training list): expect poorer samples", stacklevel=stacklevel)
    length = untrained_length(card, topology)
    if length is not None:
        trained = ", ".join(map(str, training_lengths(card)))
        warnings.warn(f"{model_path.name} was trained on peptides of {trained} residue(s) only; "
                      f"this one has {length}: expect poorer samples", stacklevel=stacklevel)
    return untrained, length


def denoiser_for(model_path, topology, chains: int):
    """A TorchScript denoiser for ``topology`` with ``chains`` chains, from a training
    checkpoint (exported now) or an existing TorchScript export (checked)."""
    model_path = Path(model_path)
    if checkpoint_record(model_path) is not None:
        denoiser, _ = load_checkpoint(model_path, averaged=True)
        return export_denoiser(denoiser, topology, chains=chains)
    module, info = load_denoiser(str(model_path))
    if info.num_chains != chains:
        raise ValueError(f"{model_path} is a TorchScript export for {info.num_chains} chain(s); "
                         f"asked for {chains} (export it again with chains={chains})")
    return module
