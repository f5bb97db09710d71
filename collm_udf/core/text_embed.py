"""Item-text embeddings from the base backbone, and the text neighbours of a user's history. Pure torch/numpy.

The candidates stage's text source (collm_udf/spark/text_neighbours.py) offers each user the cold items whose
texts lie nearest to the texts of the user's history. Nearness is measured with the backbone the CoLLM model is
built on, before any tuning: its mean-pooled last hidden state, L2-normalised (what all-MiniLM-L6-v2 was trained
for; for a causal LM the decoder's states). The base weights, not a trained model's, so the source exists before
the first training and does not change when a new model is promoted.

    embed(texts)                        -> (n, H) unit vectors
    profile(history embeddings (m, H))  -> (H,)   the normalised mean; a user's taste in text
    nearest(profile, items (c, H), k)   -> indices of the k best cosines, best first (a prior per item may be
                                           added to the standardised cosines: candidates.text_recency)
Nothing here imports pyspark.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from collm_udf.core.spec import ModelSpec


def load_embed_fn(spec: ModelSpec, device: torch.device, max_tokens: int = 32,
                  batch: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """embed(texts) -> (n, H) float32 unit vectors, with the stock backbone of `spec` on `device`."""
    from collm_udf.core.model import load_backbone  # one loader of local backbones

    backbone, tok = load_backbone(spec)
    net = backbone.get_decoder() if spec.kind == "causal" else backbone  # hidden states, not the LM head
    net.to(device).eval()

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        for s in range(0, len(texts), batch):
            b = tok([t or "" for t in texts[s:s + batch]], padding=True, truncation=True, max_length=max_tokens,
                    return_tensors="pt").to(device)
            h = net(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state  # (B, T, H)
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H): the mean over real tokens
            out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, net.config.hidden_size), np.float32)

    return embed


def profile(history: np.ndarray) -> np.ndarray:
    """(m, H) unit vectors of a user's history items -> (H,) their normalised mean (zeros for no history)."""
    if not len(history):
        return np.zeros(history.shape[-1], np.float32)
    p = np.asarray(history, np.float32).mean(axis=0)
    n = float(np.linalg.norm(p))
    return p / n if n > 0 else p


def nearest(user: np.ndarray, items: np.ndarray, k: int, exclude: np.ndarray,
            prior: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices into items, scores): the k best-scored items for the profile `user` (H,), best first, leaving out
    the boolean mask `exclude` (c,). The score is the cosine; with a `prior` (c,) it is the cosine standardised
    over the allowed items (so its spread is the same for every user) plus the prior. Ties go to the lower
    index, so a rerun offers the same items."""
    score = items @ user  # (c,)
    allowed = np.flatnonzero(~exclude)
    k = min(k, len(allowed))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if prior is not None:
        s = score[allowed]
        score = (score - s.mean()) / (s.std() + 1e-6) + prior
    order = allowed[np.argsort(-score[allowed], kind="stable")][:k]  # stable: equal scores keep index order
    return order, score[order].astype(np.float32)
