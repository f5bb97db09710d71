"""What the GPU benchmarks share: timing, the bf16 matmul peak they measure themselves, the FLOP limit, the card's
name in file names, and where a run's JSON goes. torch only (the GPU machine has no collm wheel and no Spark)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync_of(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(fn, device: torch.device, seconds: float) -> tuple[float, int]:
    """(seconds per call, calls) after one warm-up call: calls repeat until `seconds` have passed (one at least)."""
    sync = sync_of(device)
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        if time.perf_counter() - t0 >= seconds:
            return (time.perf_counter() - t0) / n, n


def matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """The matmul rate this GPU reaches here (8192^3 in `dtype`): the ceiling FLOP fractions are taken against."""
    n = 8192 if device.type == "cuda" else 512
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    per, _ = timed(lambda: a @ b, device, seconds)
    return 2 * n ** 3 / per / 1e12


def non_embedding_params(hf_model) -> int:
    """Parameters that every token multiplies through (the input embedding is a lookup)."""
    total = sum(p.numel() for p in hf_model.parameters())
    return total - hf_model.get_input_embeddings().weight.numel()


def flop_limit_pairs_per_s(tflops: float, non_emb: int, tokens_per_pair: float) -> float:
    """Pairs/s if every token cost 2 x non-embedding params FLOPs at the measured matmul rate (attention and the
    LM head's single row are left out: the limit is slightly optimistic, never pessimistic)."""
    return tflops * 1e12 / (2 * non_emb * tokens_per_pair)


def card(device: torch.device) -> str:
    """'nvidia-h200' for 'NVIDIA H200': the device's name as a file-name part ('cpu' without a GPU)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def writer(path: Path, report: dict):
    """A save() that writes `report` to `path` (called after every figure: a run cut short keeps what it got)."""
    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    return save
