"""Encoded prompts + factors -> padded tensors for the model (right padding; the model finds the last token)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from collm_udf.prompt import Encoded


def collate(enc: Sequence[Encoded], user_f: np.ndarray, item_f: np.ndarray, user_has: np.ndarray,
            item_has: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """enc: B prompts; user_f/item_f: (B, d) float; *_has: (B,) bool. Returns the model's keyword args."""
    B, T = len(enc), max(len(e.input_ids) for e in enc)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    for i, e in enumerate(enc):
        ids[i, : len(e.input_ids)] = e.input_ids
        mask[i, : len(e.input_ids)] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "user_pos": torch.tensor([e.user_pos for e in enc]),
        "item_pos": torch.tensor([e.item_pos for e in enc]),
        "user_f": torch.as_tensor(np.asarray(user_f, dtype=np.float32)),
        "item_f": torch.as_tensor(np.asarray(item_f, dtype=np.float32)),
        "user_has": torch.as_tensor(np.asarray(user_has, dtype=bool)),
        "item_has": torch.as_tensor(np.asarray(item_has, dtype=bool)),
    }
