"""Device and precision selection: one place that knows about cuda/mps/cpu and autocast.

`--device cuda` on a machine without CUDA is a one-line error, never a traceback."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class Placement:
    device: str  # torch device string, e.g. "cpu", "cuda:0"
    precision: str  # fp32 | bf16 | fp16 (autocast dtype; fp16 uses a gradient scaler)
    name: str  # human-readable device name for run.json

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def autocast(self):
        """Autocast context for the forward pass (a no-op in fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)


def resolve_device(spec: str = "auto") -> str:
    """'auto' picks cuda, then mps, then cpu; explicit devices are checked to exist."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise UsageError("--device mps: this machine has no Apple MPS device (try --device cpu)")
        return "mps"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine "
                             "(this torch build or driver sees no GPU); use --device cpu or auto")
        index = 0
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"--device {spec}: expected cuda:N with N a GPU index") from None
        if not 0 <= index < torch.cuda.device_count():
            raise UsageError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA device(s)")
        return f"cuda:{index}"
    raise UsageError(f"unknown --device {spec!r}; use auto, cpu, cuda, cuda:N or mps")


def resolve_precision(precision: str, device: str) -> str:
    """'auto' is bf16 on CUDA GPUs that support it, else fp32; bf16 on CPU only when asked."""
    import torch

    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; use {', '.join(PRECISIONS)}")
    if device.startswith("cuda"):
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError("--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
        return precision
    if precision == "auto":
        return "fp32"
    if precision == "fp16":
        raise UsageError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if precision == "bf16" and device == "cpu" and not cpu_has_bf16():
        raise UsageError("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); torch "
                         "emulates it far slower than fp32 (see docs/benchmarks.md); use fp32")
    return precision


def cpu_has_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (x86 AVX512-BF16/AMX-BF16, or Arm with BF16)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return platform.machine() in ("arm64",)  # Apple silicon has BF16
    return any(f in flags for f in ("avx512_bf16", "amx_bf16", " bf16"))


def place(device: str = "auto", precision: str = "auto", threads: int | None = None) -> Placement:
    import torch

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if dev.startswith("cuda"):
        name = torch.cuda.get_device_name(int(dev.split(":")[1]))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif dev == "mps":
        name = "Apple MPS"
    else:
        import platform

        name = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return Placement(dev, prec, name)
