"""Encoded prompts + factors -> padded "rows" for the model: one prompt per row, or a user's candidates packed.

Row format (the model's keyword arguments; R rows of T tokens, K CF slots, J scored candidates):
  input_ids (R, T)     token ids, right-padded with pad_id
  segment (R, T)       0 = user prefix, k >= 1 = the row's k-th candidate part, -1 = padding
  position_ids (R, T)  prefix 0..P-1; every candidate part restarts at P (as if it were the only candidate)
  slot_row, slot_pos, slot_kind (K,)  where each CF token goes; kind 0 = user, 1 = item
  slot_f (K, d), slot_has (K,)        its factors, and whether they exist (else the no-CF vector)
  out_row, out_seg, out_last (J,)     each candidate's row, segment and last token
  out_x (J, F)                        each candidate's signals (collm_udf/core/signals.py); absent when the caller
                                      gives none (the model then leaves its skip out)
Attention (attention.segment_mask, the dense reference; attention.block_attention computes the same without
it): a token sees the prefix and its own segment only, so a packed candidate sees exactly what it would see in
its own prompt; that is why packed and one-prompt-per-pair scores are equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from collm_udf.core.prompt import Encoded


@dataclass
class _Rows:
    pad_id: int
    ids: list = field(default_factory=list)
    seg: list = field(default_factory=list)
    pos: list = field(default_factory=list)
    slots: list = field(default_factory=list)  # (row, pos, kind, factors, has)
    outs: list = field(default_factory=list)  # (row, seg, last)
    xs: list = field(default_factory=list)  # (F,) signals per out, or None

    def new_row(self, prefix: Sequence[int], user_pos, user_f, user_has) -> int:
        self.ids.append(list(prefix))
        self.seg.append([0] * len(prefix))
        self.pos.append(list(range(len(prefix))))
        r = len(self.ids) - 1
        if user_pos is not None:
            self.slots.append((r, user_pos, 0, user_f, user_has))
        return r

    def add_candidate(self, r: int, part: Sequence[int], slots: dict, prefix_len: int, *, user_f, user_has,
                      item_f, item_has, x: "np.ndarray | None") -> None:
        start, k = len(self.ids[r]), max(self.seg[r], default=0) + 1
        self.ids[r] += list(part)
        self.seg[r] += [k] * len(part)
        self.pos[r] += list(range(prefix_len, prefix_len + len(part)))
        self.slots.append((r, start + slots["item_cf"], 1, item_f, item_has))
        if "user_cf" in slots:
            self.slots.append((r, start + slots["user_cf"], 0, user_f, user_has))
        self.outs.append((r, k, len(self.ids[r]) - 1))
        self.xs.append(x)

    def tensors(self) -> dict[str, torch.Tensor]:
        R, T = len(self.ids), max(len(x) for x in self.ids)
        ids = np.full((R, T), self.pad_id, np.int64)
        seg = np.full((R, T), -1, np.int64)
        pos = np.zeros((R, T), np.int64)
        for r in range(R):
            n = len(self.ids[r])
            ids[r, :n], seg[r, :n], pos[r, :n] = self.ids[r], self.seg[r], self.pos[r]
        row, p, kind, f, has = zip(*self.slots)
        out = np.asarray(self.outs, np.int64).reshape(-1, 3)
        return {
            "input_ids": torch.from_numpy(ids), "segment": torch.from_numpy(seg), "position_ids": torch.from_numpy(pos),
            "slot_row": torch.tensor(row), "slot_pos": torch.tensor(p), "slot_kind": torch.tensor(kind),
            "slot_f": torch.as_tensor(np.stack(f).astype(np.float32)), "slot_has": torch.tensor(has, dtype=torch.bool),
            "out_row": torch.from_numpy(out[:, 0].copy()), "out_seg": torch.from_numpy(out[:, 1].copy()),
            "out_last": torch.from_numpy(out[:, 2].copy()),
        } | ({} if self.xs[0] is None else {"out_x": torch.as_tensor(np.stack(self.xs).astype(np.float32))})


def collate(enc: Sequence[Encoded], user_f: np.ndarray, item_f: np.ndarray, user_has: np.ndarray,
            item_has: np.ndarray, pad_id: int, *, x: "np.ndarray | None" = None) -> dict[str, torch.Tensor]:
    """One prompt per row. enc: B prompts; user_f/item_f: (B, d); *_has: (B,) bool; x: (B, F) signals."""
    rows = _Rows(pad_id)
    for i, e in enumerate(enc):
        cs = e.candidate_start
        in_prefix = e.user_pos < cs
        r = rows.new_row(e.input_ids[:cs], e.user_pos if in_prefix else None, user_f[i], bool(user_has[i]))
        slots = {"item_cf": e.item_pos - cs} | ({} if in_prefix else {"user_cf": e.user_pos - cs})
        rows.add_candidate(r, e.input_ids[cs:], slots, cs, user_f=user_f[i], user_has=bool(user_has[i]),
                           item_f=item_f[i], item_has=bool(item_has[i]), x=None if x is None else x[i])
    return rows.tensors()


@dataclass
class UserGroup:
    """One user's shared prefix and candidates (parts from PromptBuilder.encode_prefix / encode_candidate)."""

    prefix: list  # token ids before {candidate}
    user_pos: "int | None"  # user CF slot in the prefix (None: it is in every candidate part)
    user_f: np.ndarray  # (d,)
    user_has: bool
    parts: list  # [(candidate ids, slots)] per candidate
    item_f: np.ndarray  # (N, d)
    item_has: np.ndarray  # (N,)
    x: "np.ndarray | None" = None  # (N, F) signals


def pack(groups: Sequence[UserGroup], pad_id: int, max_row_tokens: int = 512) -> tuple[dict, np.ndarray]:
    """Rows holding a prefix once and as many of its user's candidates as fit in max_row_tokens.

    Returns (rows, order): order[j] = (group index, candidate index) of the j-th score the model returns.
    A row longer than max_row_tokens only happens when one candidate alone does not fit beside the prefix.
    """
    rows, order = _Rows(pad_id), []
    for g, grp in enumerate(groups):
        r, used = None, 0
        for c, (part, slots) in enumerate(grp.parts):
            if r is None or used + len(part) > max_row_tokens:
                r = rows.new_row(grp.prefix, grp.user_pos, grp.user_f, grp.user_has)
                used = len(grp.prefix)
            rows.add_candidate(r, part, slots, len(grp.prefix), user_f=grp.user_f, user_has=grp.user_has,
                               item_f=grp.item_f[c], item_has=bool(grp.item_has[c]),
                               x=None if grp.x is None else grp.x[c])
            used += len(part)
            order.append((g, c))
    return rows.tensors(), np.asarray(order, np.int64).reshape(-1, 2)


def bucket(n: int, per_octave: int) -> int:
    """The smallest of a few fixed sizes >= n: n itself up to per_octave, then per_octave sizes per doubling
    (per_octave 8: 1..8, 9, 10, .., 16, 18, .., 32, 36, ..; at most 1/per_octave of padding)."""
    if n <= per_octave:
        return n
    step = max(1, (1 << ((n - 1).bit_length() - 1)) // per_octave)
    return -(-n // step) * step


def pad_to_buckets(rows: dict, pad_id: int, row_octave: int = 4, token_octave: int = 8) -> dict:
    """Rows padded to bucketed (rows, tokens) shapes, so that compiled layers see a few shapes, not one per batch.

    Tokens are padded as any row's tail is (segment -1); extra rows repeat the last row, whose candidates
    nobody reads (no out_* points there): every real row keeps its layout, so scores are unchanged."""
    R, T = rows["input_ids"].shape
    R2, T2 = bucket(R, row_octave), bucket(T, token_octave)
    if (R2, T2) == (R, T):
        return rows
    out = dict(rows)
    for k, fill in (("input_ids", pad_id), ("segment", -1), ("position_ids", 0)):
        x = torch.cat([rows[k], rows[k][-1:].expand(R2 - R, T)])
        out[k] = torch.nn.functional.pad(x, (0, T2 - T), value=fill)
    return out
