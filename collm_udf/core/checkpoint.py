"""Checkpoints: safetensors for every tensor + collm.json naming backbone, prompt, factor dim and als_run_id.

Loading never unpickles: safetensors holds raw tensors only, and the JSON is plain data. The stock backbone is
not copied into the checkpoint (it is named in the JSON and loaded from its own directory); tuned backbone
weights (full or LoRA) are. A load checks that the file holds exactly the tensors the model expects.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from collm_udf.core.model import CoLLM, build
from collm_udf.core.spec import ModelError, ModelSpec

WEIGHTS = "model.safetensors"
CONFIG = "collm.json"


def save(model: CoLLM, path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    save_file(model.saved_state(), str(p / WEIGHTS), metadata={"format": "collm", "kind": model.spec.kind})
    (p / CONFIG).write_text(json.dumps({"collm_checkpoint": 1, "spec": model.spec.to_dict()}, indent=2))
    return p


def read_spec(path: str | Path) -> ModelSpec:
    p = Path(path) / CONFIG
    try:
        data = json.loads(p.read_text())
        return ModelSpec(**data["spec"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"checkpoint {p}: unreadable config ({e})") from None


def load(path: str | Path, expect_factor_dim: int | None = None, expect_als_run_id: str | None = None):
    """(model, tokenizer) from a checkpoint dir, after checking it matches what the caller will feed it."""
    spec = read_spec(path)
    if expect_factor_dim is not None and spec.factor_dim != expect_factor_dim:
        raise ModelError(f"checkpoint {path}: factor_dim {spec.factor_dim} != factors given ({expect_factor_dim})")
    if expect_als_run_id is not None and spec.als_run_id != expect_als_run_id:
        raise ModelError(f"checkpoint {path}: trained on als_run_id {spec.als_run_id}, factors are from "
                         f"{expect_als_run_id}")
    model, tok = build(spec)
    try:
        state = load_file(str(Path(path) / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ModelError(f"checkpoint {path}: {WEIGHTS} is not a valid safetensors file ({e})") from None
    want = set(model.saved_state())
    if set(state) != want:
        missing, extra = sorted(want - set(state))[:3], sorted(set(state) - want)[:3]
        raise ModelError(f"checkpoint {path}: tensors do not match the model (missing {missing}, unexpected {extra})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: another backbone or projector width
        raise ModelError(f"checkpoint {path}: tensors do not fit the model built from its config "
                         f"({str(e).splitlines()[-1].strip()})") from None
    model.eval()
    return model, tok
