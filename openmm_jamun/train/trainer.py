"""Denoiser training, faithful to JAMUN: fixed σ, y = x + σε, Kabsch alignment of y onto x,
loss ‖x̂(y) − x‖² per graph (sum over xyz, mean over atoms) weighted by 1/c_out², Adam.
With ``parametrization: "energy"`` the same loss trains x̂ = y − σ²∇E_θ (EnergyDenoiser):
the gradient in y is taken with create_graph, so each step backpropagates through it.

Runs as one process or under ``torchrun --nproc_per_node K`` (DistributedDataParallel,
gloo on CPUs). Randomness is drawn from generators seeded by (seed, rank, step), so a
resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from dataclasses import MISSING, dataclass, field

import torch

from ..data.dataset import BALANCES, FrameSampler, GraphBatch, average_squared_distance, load_peptide
from ..model.export import EMA_STATE, load_checkpoint, save_checkpoint
from ..model.featurize import ATOM_NAMES
from ..model.network import PARAMETRIZATIONS, Denoiser, NetworkConfig, build_denoiser, count_parameters
from ..records import SettingsMismatchError, changed_settings

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOG = "train_log.jsonl"


@dataclass
class TrainConfig:
    data_root: str
    train: list[str]
    val: list[str]
    out: str
    model: dict = field(default_factory=dict)
    sigma: float = 0.04
    lr: float = 2e-3
    # "constant" (JAMUN's default) or "cosine": decay from lr to lr_min between
    # lr_decay_start and max_steps. A function of the step only, so resume is exact.
    lr_schedule: str = "constant"
    lr_min: float = 1e-5
    lr_decay_start: int = 0
    batch_size: int = 32
    # "frames": uniform over all training frames; "peptides": uniform over peptides, then frames
    balance: str = "frames"
    max_steps: int = 1000
    val_every: int = 100
    val_batches: int = 4
    checkpoint_every: int = 100
    stride: int = 1
    seed: int = 0
    threads: int | None = None
    align: bool = True
    device: str = "cpu"  # "cuda" trains on a GPU (single process)
    max_wall_s: float | None = None  # stop (with a checkpoint) once this much wall time is spent
    # Fine-tuning: start a new run from the weights (and A) of an earlier run's checkpoint.pt or
    # best.pt, with a fresh optimizer and step count. A resumable checkpoint in ``out`` wins.
    init_from: str | None = None
    # Exponential moving average of the weights (JAMUN's EMA callback uses 0.999): validation,
    # best.pt, releases and sampling from a checkpoint use the averaged weights; the optimizer
    # keeps stepping the raw ones. Turned on for a resumed run, it starts from the resumed weights.
    ema_decay: float | None = None
    # "direct": the network outputs x̂. "energy": it outputs a scalar E_θ = ‖g(y) − y‖²/2σ² (kT) and
    # x̂ = y − σ²∇E_θ, a conservative score (double backpropagation; with init_from a direct
    # checkpoint, g starts from its weights).
    parametrization: str = "direct"
    # Off-manifold examples: in this share of the graphs of a batch one atom of y (picked at random)
    # is moved a further distance drawn uniformly from [0, stretch_nm] in a random direction; the
    # target stays x. A walk reaches y that σ-noise alone almost never gives (a bond 0.2 nm off is
    # 3.5 standard deviations of its noised length); an energy model learns nothing there and its
    # restoring force fades (benchmarks/restoring_force.py). 0 (the default) is JAMUN's loss.
    stretch_fraction: float = 0.0
    stretch_nm: float = 0.3
    # Mirrored centres: in this share of the graphs every side chain of y (CB onwards; not Pro) is
    # reflected through the plane of its residue's N, CA and C (a D centre); the target stays x, which
    # is L. Noise alone almost never gives such y, so without them nothing teaches an energy model
    # that D is uphill, and its walk turns centres over. 0 (the default) is JAMUN's loss.
    flip_fraction: float = 0.0
    # Twisted examples: in this share of the graphs one random atom a of y is rotated by a random angle
    # about the axis of a bond b–c next to it (b bonded to a): the bond a–b and the angle a–b–c stay,
    # the torsions and the improper through them turn, and a's other bonds (if any) stretch, as in
    # stretch_fraction; only a moves. The target stays x. 0 (the default) is JAMUN's loss.
    twist_fraction: float = 0.0
    # Energy models only: past this length (nm) a covalent bond of y adds (r − L)²/(4σ²) kT to E_θ,
    # the noised bond's Gaussian tail, so the walk is pulled back where the data end
    # (EnergyDenoiser). 0 (the default) is JAMUN's E = ‖g(y) − y‖²/2σ² alone.
    bond_limit_nm: float = 0.0

    def __post_init__(self):
        for name in ("batch_size", "max_steps", "val_every", "val_batches", "checkpoint_every", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not 0 <= int(self.seed) < 2**31:
            raise ValueError(f"seed must lie in [0, 2**31), not {self.seed}")
        overlap = set(self.train) & set(self.val)
        if overlap:
            raise ValueError(f"peptides in both train and val: {sorted(overlap)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}")
        if self.balance not in BALANCES:  # checked here too, so a bad config fails before data loads
            raise ValueError(f"balance must be one of {BALANCES}, not {self.balance!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, not {self.parametrization!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1], not {self.ema_decay}")
        if not 0.0 <= self.stretch_fraction <= 1.0 or not self.stretch_nm > 0.0:
            raise ValueError(f"stretch_fraction must lie in [0, 1] and stretch_nm be positive, not "
                             f"{self.stretch_fraction} and {self.stretch_nm}")
        if not 0.0 <= self.flip_fraction <= 1.0:
            raise ValueError(f"flip_fraction must lie in [0, 1], not {self.flip_fraction}")
        if not 0.0 <= self.twist_fraction <= 1.0:
            raise ValueError(f"twist_fraction must lie in [0, 1], not {self.twist_fraction}")
        if not self.bond_limit_nm >= 0.0:
            raise ValueError(f"bond_limit_nm must be >= 0 (0: none), not {self.bond_limit_nm}")
        if self.bond_limit_nm and self.parametrization != "energy":
            raise ValueError("bond_limit_nm is a term of an energy model's E_θ: it needs parametrization 'energy'")

    @classmethod
    def from_file(cls, path: str) -> "TrainConfig":
        with open(path) as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config is a JSON object of TrainConfig fields")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown training config key(s) {sorted(unknown)}")
        missing = [name for name, spec in cls.__dataclass_fields__.items()
                   if name not in data and spec.default is MISSING and spec.default_factory is MISSING]
        if missing:
            raise ValueError(f"{path}: missing training config key(s) {missing}")
        try:
            config = cls(**data)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        if not config.train:
            raise ValueError(f"{path}: 'train' lists no peptides")
        return config


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate used for optimizer step ``step`` (1-based)."""
    if config.lr_schedule == "constant" or step <= config.lr_decay_start:
        return config.lr
    span = max(1, config.max_steps - config.lr_decay_start)
    progress = min(1.0, (step - config.lr_decay_start) / span)
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1.0 + math.cos(math.pi * progress))


def _segment_mean(values: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    sums = torch.zeros(count, *values.shape[1:], dtype=values.dtype, device=values.device).index_add(0, index, values)
    sizes = torch.zeros(count, dtype=values.dtype, device=values.device).index_add(
        0, index, torch.ones_like(index, dtype=values.dtype))
    return sums / sizes.reshape(-1, *([1] * (values.dim() - 1)))


def center(positions: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    return positions - _segment_mean(positions, graph_index, num_graphs)[graph_index]


def kabsch_align(y: torch.Tensor, x: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Rotate each (centred) graph of y onto the same graph of x (proper rotations only)."""
    H = torch.zeros(num_graphs, 3, 3, dtype=y.dtype, device=y.device).index_add(
        0, graph_index, y.unsqueeze(2) * x.unsqueeze(1))
    U, _, Vt = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(Vt.transpose(1, 2) @ U.transpose(1, 2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=1))
    R = Vt.transpose(1, 2) @ D @ U.transpose(1, 2)  # R @ y_i ≈ x_i
    return torch.einsum("nij,nj->ni", R[graph_index], y)


def _side_chain(adjacency: torch.Tensor, cb: int, ca: int) -> list[int]:
    """The atoms reachable from ``cb`` without passing through ``ca`` (CB and the rest of its side chain)."""
    seen, todo = {cb}, [cb]
    while todo:
        for atom in adjacency[todo.pop()].nonzero().flatten().tolist():
            if atom != ca and atom not in seen:
                seen.add(atom)
                todo.append(atom)
    return sorted(seen)


def mirror_centres(y: torch.Tensor, batch: GraphBatch, graphs: torch.Tensor) -> torch.Tensor:
    """y with the side chain of every residue of the chosen ``graphs`` ([num_graphs] bool) reflected
    through the plane of its N, CA and C: each L centre made D with the side chain's own geometry
    kept. Gly (no CB) and Pro (its ring closes on N, so no reflection keeps it whole) are left as
    they are."""
    names, adjacency = batch.atom_name, batch.bond_adjacency
    index = {name: ATOM_NAMES.index(name) for name in ("N", "CA", "C", "CB")}
    cb = ((names == index["CB"]) & graphs.to(names.device)[batch.graph_index]).nonzero().flatten()
    if len(cb) == 0:
        return y

    def bonded(atoms, name):  # the neighbour of each of ``atoms`` called ``name``; -1 where none
        hits = adjacency[atoms] & (names == index[name]).unsqueeze(0)
        return torch.where(hits.any(dim=1), hits.float().argmax(dim=1), torch.full_like(atoms, -1))

    ca = bonded(cb, "CA")
    cb, ca = cb[ca >= 0], ca[ca >= 0]
    n, c = bonded(ca, "N"), bonded(ca, "C")
    keep = (n >= 0) & (c >= 0)
    cb, ca, n, c = cb[keep], ca[keep], n[keep], c[keep]
    normal = torch.linalg.cross(y[n] - y[ca], y[c] - y[ca])
    normal = normal / normal.norm(dim=-1, keepdim=True)
    cpu_adjacency = adjacency.cpu()
    y = y.clone()
    for k in range(len(cb)):
        side = _side_chain(cpu_adjacency, int(cb[k]), int(ca[k]))
        if int(n[k]) in side:  # proline
            continue
        atoms = torch.as_tensor(side, device=y.device)
        y[atoms] = y[atoms] - 2.0 * ((y[atoms] - y[ca[k]]) @ normal[k]).unsqueeze(-1) * normal[k]
    return y


def twist_atoms(y: torch.Tensor, batch: GraphBatch, graphs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """y with, in each of the chosen ``graphs``, one random atom a rotated by a random angle in
    [−π, π) about the axis through its random neighbour b along a random other neighbour c of b."""
    adjacency, graph_index = batch.bond_adjacency.cpu(), batch.graph_index.cpu()

    def pick(options: list[int], draw: torch.Tensor) -> int:  # one of ``options``, by a draw in [0, 1)
        return options[min(int(draw * len(options)), len(options) - 1)]

    y = y.clone()
    for graph in graphs.nonzero().flatten().tolist():
        draws = torch.rand(4, generator=generator)
        a = pick((graph_index == graph).nonzero().flatten().tolist(), draws[0])
        neighbours = adjacency[a].nonzero().flatten().tolist()
        if not neighbours:
            continue
        b = pick(neighbours, draws[1])
        others = [c for c in adjacency[b].nonzero().flatten().tolist() if c != a]
        if not others:
            continue
        c = pick(others, draws[2])
        axis = y[b] - y[c]
        axis = axis / axis.norm()
        angle = (2.0 * float(draws[3]) - 1.0) * math.pi
        v = y[a] - y[b]  # Rodrigues' rotation of v about the axis
        v = (v * math.cos(angle) + torch.linalg.cross(axis, v) * math.sin(angle)
             + axis * (axis @ v) * (1.0 - math.cos(angle)))
        y[a] = y[b] + v
    return y


def noised_positions(x: torch.Tensor, batch: GraphBatch, sigma: float, generator: torch.Generator,
                     align: bool = True, stretch_fraction: float = 0.0, stretch_nm: float = 0.3,
                     flip_fraction: float = 0.0, twist_fraction: float = 0.0) -> torch.Tensor:
    """y = x + σε for centred clean positions x, centred and (``align``) Kabsch-aligned onto x; with
    ``stretch_fraction``, that share of the graphs has one atom moved further, with ``flip_fraction``
    that share has its CA centres mirrored, with ``twist_fraction`` one atom turned about a bond next
    to it (TrainConfig says why)."""
    y = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
    if stretch_fraction > 0.0:
        chosen = torch.rand(batch.num_graphs, generator=generator) < stretch_fraction
        counts = torch.bincount(batch.graph_index.cpu(), minlength=batch.num_graphs)
        first = torch.cumsum(counts, 0) - counts
        atom = first + (torch.rand(batch.num_graphs, generator=generator) * counts).long().clamp(max=counts - 1)
        direction = torch.randn(batch.num_graphs, 3, generator=generator, dtype=x.dtype)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        length = stretch_nm * torch.rand(batch.num_graphs, 1, generator=generator, dtype=x.dtype)
        y = y.clone()
        y[atom[chosen].to(x.device)] += (direction * length)[chosen].to(x.device)
    if flip_fraction > 0.0:  # drawn after the others: the same y as before for flip_fraction 0
        y = mirror_centres(y, batch, torch.rand(batch.num_graphs, generator=generator) < flip_fraction)
    if twist_fraction > 0.0:
        y = twist_atoms(y, batch, torch.rand(batch.num_graphs, generator=generator) < twist_fraction, generator)
    y = center(y, batch.graph_index, batch.num_graphs)
    if align:
        y = kabsch_align(y, x, batch.graph_index, batch.num_graphs)
    return y


def denoising_loss(model, batch: GraphBatch, sigma: float, c_out: float, generator: torch.Generator,
                   align: bool = True, stretch_fraction: float = 0.0, stretch_nm: float = 0.3,
                   flip_fraction: float = 0.0, twist_fraction: float = 0.0) -> torch.Tensor:
    """Per-graph weighted loss ‖x̂(y) − x‖²/c_out² (sum over xyz, mean over atoms)."""
    x = center(batch.positions, batch.graph_index, batch.num_graphs)
    with torch.no_grad():
        y = noised_positions(x, batch, sigma, generator, align, stretch_fraction, stretch_nm, flip_fraction,
                             twist_fraction)
    xhat = model(y, batch.element, batch.atom_name, batch.residue, batch.graph_index, batch.bond_adjacency,
                 batch.num_graphs)
    per_atom = ((xhat - x) ** 2).sum(-1)
    return _segment_mean(per_atom, batch.graph_index, batch.num_graphs) / c_out**2


def training_step(model, optimizer: torch.optim.Optimizer, batch: GraphBatch, config: TrainConfig, c_out: float,
                  generator: torch.Generator, lr: float | None = None) -> float:
    """One optimizer step on ``batch``: the config's denoising loss (with its off-manifold examples),
    backpropagated (through a gradient for an energy model, whose jump is y − σ²∇E: double
    backpropagation), then the optimizer's step at ``lr`` (unchanged if None). Returns the batch's
    mean loss."""
    loss = denoising_loss(model, batch, config.sigma, c_out, generator, config.align, config.stretch_fraction,
                          config.stretch_nm, config.flip_fraction, config.twist_fraction).mean()
    optimizer.zero_grad(set_to_none=True)
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    loss.backward()
    optimizer.step()
    return loss.item()


def _generator(seed: int, rank: int, step: int, stream: int) -> torch.Generator:
    # modulo 2**63: manual_seed takes a signed 64-bit integer (smaller values are unchanged)
    return torch.Generator().manual_seed((((seed * 1_000_003 + rank) * 1_000_003 + step) * 4 + stream) % 2**63)


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group, which the caller then ends)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), started


def validation_loss(denoiser: Denoiser, peptides, config: TrainConfig) -> float:
    """Mean weighted loss on a fixed set of validation frames and noise draws."""
    if not peptides:
        return float("nan")
    sampler = FrameSampler(peptides, seed=config.seed + 7919)
    losses = []
    with torch.no_grad():
        for i in range(config.val_batches):
            batch = sampler.sample(config.batch_size).to(config.device)
            losses.append(denoising_loss(denoiser, batch, config.sigma, denoiser.c_out,
                                         _generator(config.seed, 0, i, 3), config.align).mean().item())
    return float(sum(losses) / len(losses))


def _initial_weights(config: TrainConfig, network_config: NetworkConfig) -> tuple[Denoiser, list[str]]:
    """The denoiser of ``config.init_from`` (its averaged weights where that run kept them),
    checked against this run's network (σ is checked by the caller, as for a resumed checkpoint),
    and the peptides those weights were trained on (none of which may validate this run)."""
    if not os.path.isfile(config.init_from):
        raise FileNotFoundError(f"init_from: no checkpoint at {config.init_from}")
    # the same weights in this run's parametrization (a direct g becomes E = ‖g − y‖²/2σ²)
    denoiser, record = load_checkpoint(config.init_from, averaged=True, parametrization=config.parametrization)
    if config.parametrization == "energy":
        denoiser.bond_limit = float(config.bond_limit_nm)  # this run's E_θ, whatever the start's was
    if config.model and denoiser.config.to_dict() != network_config.to_dict():
        raise ValueError(f"init_from {config.init_from}: its network {denoiser.config.to_dict()} differs from "
                         f"the config's model {network_config.to_dict()}; drop 'model' to take the checkpoint's")
    seen = list(record.get("train", []))
    leaked = sorted(set(seen) & set(config.val))
    if leaked:
        raise ValueError(f"init_from {config.init_from}: its weights were trained on {leaked}, which this run "
                         "validates on; the validation loss would not measure unseen peptides")
    return denoiser, seen


#: TrainConfig fields a resumed run must share with the run that wrote its checkpoint (the rest,
#: e.g. max_steps, max_wall_s, val_every, threads, out, may change).
RESUME_FIXED = ("data_root", "train", "val", "sigma", "lr", "lr_schedule", "lr_min", "lr_decay_start", "batch_size",
                "balance", "stride", "seed", "align", "ema_decay", "init_from", "parametrization",
                "stretch_fraction", "stretch_nm", "flip_fraction", "twist_fraction",
                "bond_limit_nm")
#: What a checkpoint written before a RESUME_FIXED field existed ran with.
RESUME_DEFAULTS = {"parametrization": "direct", "stretch_fraction": 0.0, "stretch_nm": 0.3, "flip_fraction": 0.0,
                   "twist_fraction": 0.0, "bond_limit_nm": 0.0}


def _check_resume(config: TrainConfig, record: dict, network: Denoiser, world: int) -> None:
    saved = record.get("config_fixed")
    if saved is None:  # a checkpoint from before these were recorded
        return
    ours = {name: getattr(config, name) for name in RESUME_FIXED}
    saved = {**RESUME_DEFAULTS, **saved}
    changed = changed_settings(saved, ours, none_means_unset=False)
    if config.model and network.config.to_dict() != NetworkConfig.from_dict(config.model).to_dict():
        changed["model"] = (network.config.to_dict(), config.model)
    if record.get("world_size", world) != world:
        changed["world_size"] = (record["world_size"], world)
    if changed:
        listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changed.items())
        raise SettingsMismatchError(f"{config.out} holds a checkpoint of another run ({listed}); a resumed run keeps its "
                         "settings (only max_steps, max_wall_s, val_every, val_batches, checkpoint_every, threads "
                         "and device may change): use another 'out'")
    if config.lr_schedule == "cosine" and record.get("max_steps", config.max_steps) != config.max_steps:
        warnings.warn(f"max_steps {record['max_steps']} -> {config.max_steps} moves the cosine learning-rate "
                      "schedule of a resumed run", stacklevel=3)


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) into ``config.out``; returns a summary of the run."""
    import torch.distributed as dist

    rank, world, started_group = _distributed()
    try:
        summary = _train(config, progress, rank, world)
        if world > 1:
            dist.barrier()
        return summary
    finally:
        if started_group:  # a group left to the interpreter's exit can abort a rank as gloo's threads die
            dist.destroy_process_group()


def _train(config: TrainConfig, progress: bool, rank: int, world: int) -> dict:
    from tqdm import tqdm

    if config.threads:
        torch.set_num_threads(int(config.threads))
    os.makedirs(config.out, exist_ok=True)
    checkpoint_path = os.path.join(config.out, CHECKPOINT)

    train_set = [load_peptide(os.path.join(config.data_root, n), config.stride) for n in config.train]
    val_set = [load_peptide(os.path.join(config.data_root, n), config.stride) for n in config.val]
    network_config = NetworkConfig.from_dict(config.model)

    seen_before: list[str] = []  # peptides the starting weights were trained on (init_from)
    if os.path.isfile(checkpoint_path):
        denoiser, record = load_checkpoint(checkpoint_path)
        _check_resume(config, record, denoiser, world)
        start_step, best = int(record["step"]), float(record.get("best_val_loss", math.inf))
        wall_before = float(record.get("wall_time_s", 0.0))
        seen_before = [p for p in record.get("train", []) if p not in config.train]
    elif config.init_from:
        denoiser, seen_before = _initial_weights(config, network_config)
        record, start_step, best, wall_before = None, 0, math.inf, 0.0
    else:
        torch.manual_seed(config.seed)
        A = average_squared_distance(train_set, network_config.cutoff)
        denoiser = build_denoiser(config.parametrization, network_config, config.sigma, A, config.bond_limit_nm)
        record, start_step, best, wall_before = None, 0, math.inf, 0.0
    if abs(denoiser.sigma - config.sigma) > 1e-12:
        raise ValueError(f"checkpoint sigma {denoiser.sigma} differs from config sigma {config.sigma}")

    denoiser = denoiser.to(config.device)
    model = denoiser
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(denoiser)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
    if record is not None and "optimizer" in record:
        optimizer.load_state_dict(record["optimizer"])
    averaged = None  # the EMA weights, in a Denoiser of their own
    if config.ema_decay is not None:
        averaged = copy.deepcopy(denoiser)
        if record is not None and EMA_STATE in record:
            averaged.load_state_dict(record[EMA_STATE])
        averaged.requires_grad_(False)
    evaluated = averaged if averaged is not None else denoiser  # what validation and best.pt see

    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} processes")
    per_rank_batch = config.batch_size // world
    sampler = FrameSampler(train_set, seed=0, balance=config.balance)
    frames = sum(len(p.frames) for p in train_set)
    # what every checkpoint records about the run that made it
    # "train": every peptide the weights have seen, this run's and (fine-tuning) the earlier runs'
    provenance = {"train": list(config.train) + [p for p in seen_before if p not in config.train],
                  "val": list(config.val), "train_frames": frames, "init_from": config.init_from,
                  "config_fixed": {name: getattr(config, name) for name in RESUME_FIXED}, "world_size": world,
                  "max_steps": config.max_steps}
    summary = {"parameters": count_parameters(denoiser), "parametrization": config.parametrization,
               "train_frames": frames,
               "average_squared_distance": denoiser.average_squared_distance, "world_size": world}
    log = open(os.path.join(config.out, LOG), "a") if rank == 0 else None
    bar = tqdm(total=config.max_steps, initial=start_step, disable=not progress or rank != 0, desc="train")
    start = time.time()
    loss_value = float("nan")

    def save(step):
        extra = {"step": step, "optimizer": optimizer.state_dict(), "best_val_loss": best,
                 "wall_time_s": wall_before + time.time() - start, **provenance}
        if averaged is not None:
            extra.update({EMA_STATE: averaged.state_dict(), "ema_decay": config.ema_decay})
        save_checkpoint(checkpoint_path, denoiser, **extra)

    step = start_step
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            sampler.generator = _generator(config.seed, rank, step, 0)
            batch = sampler.sample(per_rank_batch).to(config.device)
            loss_value = training_step(model, optimizer, batch, config, denoiser.c_out,
                                       _generator(config.seed, rank, step, 1), learning_rate(config, step))
            if averaged is not None:
                with torch.no_grad():
                    for mean, weight in zip(averaged.parameters(), denoiser.parameters()):
                        mean.lerp_(weight, 1.0 - config.ema_decay)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            entry = None
            out_of_time = config.max_wall_s is not None and time.time() - start > config.max_wall_s
            if world > 1 and config.max_wall_s is not None:  # one decision for all ranks, or DDP would hang
                import torch.distributed as dist

                flag = torch.tensor([float(out_of_time)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if rank == 0 and (step % config.val_every == 0 or step == config.max_steps or out_of_time):
                val = validation_loss(evaluated, val_set, config)
                entry = {"step": step, "loss": loss_value, "val_loss": val,
                         "wall_time_s": round(wall_before + time.time() - start, 1)}
                if val < best:
                    best = val
                    save_checkpoint(os.path.join(config.out, BEST), evaluated, step=step, best_val_loss=best,
                                    ema_decay=config.ema_decay, **provenance)
            if rank == 0 and (step % config.checkpoint_every == 0 or step == config.max_steps or out_of_time):
                save(step)
            if entry is not None:
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if out_of_time:
                break
    finally:  # an interrupted run resumes from its last checkpoint
        bar.close()
        if log is not None:
            log.close()
    summary.update({"steps": step, "last_loss": loss_value, "best_val_loss": best if math.isfinite(best) else None,
                    "wall_time_s": round(wall_before + time.time() - start, 1)})
    return summary
