"""How close to the machine: its measured peaks and a model's FLOPs per token.

Peaks are measured here, not looked up: square matmuls for FLOP/s (float32 or bfloat16), large reductions and
copies for memory bandwidth, on the threads PyTorch uses now. `peak_flops` keeps its measurement in the cache
(NEXTLAB_CACHE), per device, threads, dtype and PyTorch version, so a training run measures it once per machine
and reports model FLOPs utilization (MFU) against it, as nanoGPT does against an A100's datasheet figure.
benchmarks/roofline.py puts every hot loop against these roofs.
"""

from __future__ import annotations

import json
import platform
import time

import torch

PEAK_SIZE = 2048  # largest matmul side for the peak: large enough to be compute-bound here
PEAK_SECONDS = 0.05  # ...unless one matmul already takes this long at a smaller side (an emulated dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int = 5) -> float:
    """The fastest of `repeats` timed calls, after one warm-up: the machine's capability, not its noise."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops(m: int, k: int, n: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 repeats: int = 5) -> float:
    """FLOP/s of an (m x k) @ (k x n) matmul: 2mkn per call."""
    device = torch.device(device)
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    with torch.inference_mode():
        seconds = best_seconds(lambda: a @ b, device, repeats)
    return 2 * m * k * n / seconds


def read_bandwidth(megabytes: float = 400, device: str | torch.device = "cpu", repeats: int = 5) -> float:
    """Bytes/s of a sum over a float32 tensor of `megabytes` (each byte read once)."""
    device = torch.device(device)
    x = torch.ones(int(megabytes * 2**20) // 4, device=device)
    return x.numel() * 4 / best_seconds(lambda: x.sum(), device, repeats)


def copy_bandwidth(megabytes: float = 400, device: str | torch.device = "cpu", repeats: int = 5) -> float:
    """Bytes/s of a copy between two float32 tensors of `megabytes` (each byte read once and written once)."""
    device = torch.device(device)
    src = torch.ones(int(megabytes * 2**20) // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src), device, repeats)


def peak_matmul(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", repeats: int = 5) -> tuple[float, int]:
    """(FLOP/s, side) of square matmuls, doubling the side from 256 to PEAK_SIZE while one takes under PEAK_SECONDS.

    Where the dtype is emulated (bfloat16 on an AVX2-only CPU: 0.3 GFLOP/s measured), a 2048 cube would take a
    minute per call; a smaller side measures the same slow rate in a fraction of a second.
    """
    side = 256
    while True:
        flops = matmul_flops(side, side, side, dtype, device, repeats)
        if side >= PEAK_SIZE or 2 * side**3 / flops > PEAK_SECONDS:
            return flops, side
        side *= 2


def device_name(device: torch.device) -> str:
    """The accelerator's or CPU's model name (platform.processor() is empty on Linux)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> float:
    """The matmul FLOP/s this machine reaches (peak_matmul), measured once and kept in the cache."""
    from nextlab.data import cache_root  # beside the tokenized corpora

    device = torch.device(device)
    key = f"{device.type}|{device_name(device)}|{torch.get_num_threads()}|{dtype}|{torch.__version__}"
    path = cache_root() / "roofline.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if not isinstance(known.get(key), int | float):
        known[key] = peak_matmul(dtype, device)[0]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(known, indent=1))
        except OSError:
            pass  # a read-only cache: measured again next time
    return float(known[key])


def multiplying_weights(model) -> int:
    """Parameters that multiply activations: all but the embedding lookups, the output head included, tied or not."""
    weights = model.num_params(non_embedding=True)
    if model.lm_head.weight is model.embed_tokens.weight:
        weights += model.lm_head.weight.numel()
    return weights


def flops_per_token(model, context: int) -> float:
    """Training FLOPs per token (forward and backward), as nanoGPT's estimate_mfu and Kaplan et al.: 6 per weight
    that multiplies (multiplying_weights) plus 12 * layers * width * context for attention's scores and weighted
    sums."""
    return 6 * multiplying_weights(model) + 12 * model.cfg.n_layer * model.cfg.n_embd * context
