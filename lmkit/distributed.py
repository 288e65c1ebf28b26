"""Data-parallel neural training across the processes torchrun starts (torch.distributed + DDP).

Everything that knows about ranks lives here, so the one training loop reads as the single-process loop
plus a few calls that do nothing when WORLD_SIZE is 1.

The math. `--batch-size` is the GLOBAL batch. Every rank builds the same epoch plan (same seed, same
data) and keeps its own block of rows of each global batch. Each rank's loss is its share of the
global mean, -sum(ln P of its targets) / (target tokens of the whole global batch), and the gradients
are summed across ranks (not averaged, as DDP does by default), so each step is the single-process step
on the whole batch: the same numbers up to the order of floating-point sums. The global token count
needs no communication: every rank holds the global batch plan and counts it on the host.

Control: once per step the ranks agree on two host-side numbers over a CPU (gloo) group, the OR of
their SIGINT flags and rank 0's step time. So all ranks stop at the same step (budgets, Ctrl-C), time
budgets follow rank 0's clock, and no device synchronisation is added to the step.

Rank 0 is the only writer and the only speaker: run folder, lock, checkpoints, metrics, scores, logs
and progress. Validation is scored by rank 0 alone through the one scoring path (exact in every
context, including a recurrent state carried across a whole stream); the other ranks wait for its
result. No torch or numpy import at module level: the CLI asks `launch_from_env()` for free."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import LmkitError, UsageError

if TYPE_CHECKING:
    import numpy as np


class RankError(LmkitError):
    """A failure of one process (its GPU, its node): every rank that hits it reports it, named."""


@dataclass(frozen=True)
class Launch:
    """Who this process is, as torchrun's environment says (RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch:
    """The launch torchrun describes; one process (rank 0 of 1) without its variables."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return Launch()
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    if world > 1 and not env.get("MASTER_ADDR"):
        raise UsageError(f"WORLD_SIZE={world} but MASTER_ADDR is not set: start data-parallel training with "
                         "torchrun (torchrun --nproc-per-node N -m lmkit train ...)")
    return Launch(rank, world, local)


def is_main_process() -> bool:
    """True unless this is a non-zero torchrun rank (a broken environment counts as rank 0: it must speak)."""
    try:
        return launch_from_env().is_main
    except UsageError:
        return True


def error_line(message: str, same_on_every_rank: bool) -> str | None:
    """The `error: ...` line this process prints, or None to stay silent.

    Rank 0 speaks for the job. A failure every rank meets identically (a bad option: every rank parses the
    same command line; a collective stop) is left to rank 0, so it is printed once; any other failure is
    printed by each rank that meets it, prefixed with its rank, because it may be that rank's alone."""
    try:
        launch = launch_from_env()
    except UsageError:
        launch = Launch()
    if launch.is_main:
        return f"error: {message}"
    if same_on_every_rank:
        return None
    return f"error: rank {launch.rank}: {message}"


def check_global_batch(batch_size: int, world_size: int) -> None:
    """--batch-size is the global batch: it must split into equal blocks of rows, one per process."""
    if world_size > 1 and batch_size % world_size:
        lower = batch_size - batch_size % world_size
        hint = f"{lower} or {lower + world_size}" if lower else f"{world_size}"
        raise UsageError(f"--batch-size {batch_size} is the global batch and must be divisible by the {world_size} "
                         f"processes (--nnodes x --nproc-per-node); use {hint}")


def check_family(neural: bool, spec: str, world_size: int) -> None:
    """n-gram models are counted, not trained by gradient steps: they run in one process."""
    if world_size > 1 and not neural:
        raise UsageError(f"{spec}: n-gram models are counted in one process; run `lmkit train` without torchrun "
                         "(torchrun/DDP trains the neural families; docs/scale.md covers large n-gram counts)")


def device_for_rank(spec: str | None, launch: Launch) -> str:
    """The --device of this rank: `cuda` (or `auto` with GPUs) becomes cuda:LOCAL_RANK; cpu stays cpu."""
    if launch.world_size == 1:
        return spec or "auto"
    import torch

    s = (spec or "auto").strip().lower()
    if s == "auto":
        s = "cuda" if torch.cuda.is_available() else "cpu"
    if s == "mps":
        raise UsageError("--device mps: torch.distributed has no MPS backend; use --device cpu under torchrun")
    if s.startswith("cuda:"):
        raise UsageError(f"--device {s}: under torchrun each process uses cuda:LOCAL_RANK; give --device cuda "
                         "(choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if s == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: CUDA is not available on this machine; use --device cpu (gloo)")
        count = torch.cuda.device_count()
        if launch.local_rank >= count:
            raise RankError(f"LOCAL_RANK {launch.local_rank} has no GPU: this node has {count} CUDA device(s); "
                            "start at most that many processes per node (--nproc-per-node)")
        return f"cuda:{launch.local_rank}"
    return s  # cpu, or a name lmkit.device reports as unknown


def shard_rows(x: np.ndarray, y: np.ndarray, rank: int, world_size: int, batch_size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """This rank's block of rows of a global batch (inputs x, targets y, both (rows, T)).

    Rank r takes rows [r*b, (r+1)*b) with b = batch_size / world_size, so the blocks are where the rows
    sit in the single-process batch. A short last batch can leave a rank no row: it then gets one row of
    <pad>, which has no target, so it adds nothing to the loss, the gradient or the token count."""
    if world_size == 1:
        return x, y
    import numpy as np

    from .data.vocab import PAD

    per = batch_size // world_size
    xs, ys = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
    if len(xs) == 0:
        xs = np.full((1, x.shape[1]), PAD, dtype=x.dtype)
        ys = np.full((1, y.shape[1]), PAD, dtype=y.dtype)
    return xs, ys


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The torch seed of a rank (dropout masks): rank 0 keeps the run's seed, so one process matches it;
    the others get independent streams (equal seeds would give every rank the same masks)."""
    if rank == 0 and step == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def _no_buffer_sync() -> dict:
    """DDP's option to skip re-broadcasting buffers before every forward: they are constants (causal masks,
    positions), equal on every rank from the seeded build. Newer torch renames the option."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def _sum_gradients(group, bucket):
    """DDP communication hook: sum the gradient buckets (DDP's default divides by the world size).

    Each rank's loss is already its share of the global mean loss, so the sum is the global gradient."""
    import torch.distributed as dist

    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


@dataclass
class Ranks:
    """The process group as the training loop sees it. With world_size 1 every method is an identity."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "auto"  # this rank's --device (cuda:LOCAL_RANK under torchrun with GPUs)
    backend: str | None = None  # nccl | gloo; None for one process
    control: Any = field(default=None, repr=False)  # a gloo group for host-side agreement (None: the default)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        return f"{self.world_size} processes (DDP over {self.backend})" if self.distributed else "1 process"

    def info(self, batch_size: int) -> dict:
        """What run.json records about the parallel layout of the run."""
        return {"world_size": self.world_size, "backend": self.backend, "global_batch": batch_size,
                "rows_per_process": batch_size // self.world_size}

    # -- the training step ----------------------------------------------------------------------------
    def wrap(self, net):
        """The module the training step calls: `net` itself, or DDP around it (gradients summed)."""
        if not self.distributed:
            return net
        from torch.nn.parallel import DistributedDataParallel

        from .models.torchlm import unwrap

        ddp = DistributedDataParallel(
            net, device_ids=[self.local_rank] if self.device.startswith("cuda") else None,
            # an adaptive softmax skips tails no target of a rank hits
            find_unused_parameters=bool(getattr(unwrap(net), "scores_targets", False)),
            **_no_buffer_sync())
        ddp.register_comm_hook(None, _sum_gradients)
        return ddp

    def shard(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        return shard_rows(x, y, self.rank, self.world_size, batch_size)

    def agree(self, interrupted: bool, seconds: float) -> tuple[bool, float]:
        """(any rank interrupted, rank 0's seconds): one host-side all-reduce per step, so every rank stops at
        the same step and counts the same training time. No device synchronisation."""
        if not self.distributed:
            return interrupted, seconds
        import torch
        import torch.distributed as dist

        flags = torch.tensor([1.0 if interrupted else 0.0, seconds if self.is_main else 0.0], dtype=torch.float64)
        dist.all_reduce(flags, group=self.control)
        return bool(flags[0] > 0), float(flags[1])

    def sum_(self, tensor):
        """Sum a device tensor over the ranks in place (the logged loss: each rank holds its share)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def from_main(self, value: float | None) -> float | None:
        """Rank 0's number on every rank (the validation perplexity it scored alone)."""
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([0.0 if value is None else float(value), 0.0 if value is None else 1.0],
                         dtype=torch.float64)
        dist.broadcast(t, src=0, group=self.control)
        return float(t[0]) if t[1] > 0 else None

    # -- checkpoints ----------------------------------------------------------------------------------
    def gather_rows(self, state):
        """A recurrent state over the whole global batch: each rank's (layers, b, H) blocks joined on the
        batch axis, on the CPU. The checkpoint then resumes in any number of processes."""
        if state is None or not self.distributed:
            return state
        import torch
        import torch.distributed as dist

        parts = state if isinstance(state, tuple) else (state,)
        joined = []
        for t in parts:
            local = t.detach().cpu().contiguous()
            blocks = [torch.empty_like(local) for _ in range(self.world_size)]
            dist.all_gather(blocks, local, group=self.control)
            joined.append(torch.cat(blocks, dim=1))
        return tuple(joined) if isinstance(state, tuple) else joined[0]

    def take_rows(self, parts: tuple, batch_size: int) -> tuple:
        """This rank's rows of a checkpointed global recurrent state ((layers, B, H) tensors)."""
        rows = parts[0].shape[1]
        if rows != batch_size:
            from .errors import ModelError

            raise ModelError(f"the checkpoint's recurrent state has {rows} rows but the global batch is {batch_size}; "
                             f"resume stream training with --batch-size {rows}")
        per = batch_size // self.world_size
        return tuple(t[:, self.rank * per:(self.rank + 1) * per] for t in parts)

    def gather_rng(self):
        """Every rank's CPU RNG state, (world, n) uint8, so a resume restores each rank's dropout stream."""
        if not self.distributed:
            return None
        import torch
        import torch.distributed as dist

        local = torch.get_rng_state()
        states = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(states, local, group=self.control)
        return torch.stack(states)

    def restore_rng(self, tensors: dict, seed: int, step: int) -> None:
        """Set this rank's RNG from a checkpoint: rank 0's is `torch_rng` (as one process writes it); other
        ranks take their saved row when the world size is the same, else a fresh stream for (seed, rank, step)."""
        import torch

        if self.rank == 0:
            torch.set_rng_state(tensors["torch_rng"].cpu())
            return
        saved = tensors.get("rank_rng")
        if isinstance(saved, torch.Tensor) and saved.dim() == 2 and saved.shape[0] == self.world_size:
            torch.set_rng_state(saved[self.rank].cpu().clone())  # a row view (storage offset) crashes torch
        else:
            torch.manual_seed(rank_seed(seed, self.rank, step))


SINGLE = Ranks()


def _backend_for(device: str) -> str:
    import torch.distributed as dist

    if device.startswith("cuda"):
        if not dist.is_nccl_available():
            raise UsageError("this torch build has no NCCL for multi-GPU training; use --device cpu (gloo)")
        return "nccl"
    if not dist.is_gloo_available():
        raise UsageError("this torch build has no gloo backend for CPU data-parallel training")
    return "gloo"


@contextmanager
def session(device: str | None, launch: Launch | None = None) -> Iterator[Ranks]:
    """The process group for one training run: SINGLE without torchrun; else init (nccl on CUDA, gloo on
    CPU), yield, and destroy it at the end and on error."""
    launch = launch or launch_from_env()
    if launch.world_size == 1:
        yield Ranks(device=device or "auto")
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; run without torchrun")
    spec = device_for_rank(device, launch)
    backend = _backend_for(spec)
    if spec.startswith("cuda"):
        torch.cuda.set_device(int(spec.split(":")[1]))  # before NCCL starts, so each rank owns its GPU
    try:
        dist.init_process_group(backend=backend)
    except Exception as exc:  # rendezvous failures come as many types; one line names the cause
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RankError(f"torch.distributed could not start ({backend}): {text}") from None
    try:
        control = dist.new_group(backend="gloo") if backend != "gloo" else None
        yield Ranks(launch.rank, launch.world_size, launch.local_rank, spec, backend, control)
    finally:
        dist.destroy_process_group()
