"""Prompts with CF-token slots, tokenised so that truncation never cuts the CF tokens or the candidate.

A template is text with four fields: {history} (the user's recent positive titles), {user_cf} and {item_cf}
(one CF token each: the projected ALS factors replace the token at that position) and {candidate} (the
candidate's title/text). The default is CoLLM's prompt. Tokenising field by field gives the exact CF positions;
when the prompt is too long, whole history titles are dropped, oldest first, then the last kept title is cut.
The candidate text has its own cap (candidate_max_tokens) so one huge item text cannot crowd out the rest.

A prompt is two parts: the user prefix (everything before {candidate}) and the candidate part (from {candidate}
on). The history budget reserves candidate_max_tokens whatever the candidate's length, so a user's prefix is
the same token sequence for every candidate: packed scoring (collm_udf/core/batching.py) encodes it once per user.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

DEFAULT_TEMPLATE = (
    "#Question: A user has given high ratings to the following items: {history}. Additionally, we have "
    "information about the user's preferences encoded in the feature {user_cf}. Using all available "
    "information, make a prediction about whether the user would enjoy the item titled {candidate} with the "
    "feature {item_cf}? Answer with \"Yes\" or \"No\".\n#Answer:"
)
# Compact template for small encoders on CPU: ~10 fixed tokens instead of ~70, so the budget goes to titles.
COMPACT_TEMPLATE = "liked: {history}. user {user_cf}. candidate: {candidate}. item {item_cf}."
TEMPLATES = {"collm": DEFAULT_TEMPLATE, "compact": COMPACT_TEMPLATE}
FIELDS = ("history", "user_cf", "candidate", "item_cf")
_FIELD = re.compile(r"\{(\w+)\}")


class PromptError(ValueError):
    pass


def parse_template(template: str) -> list[tuple[str, str]]:
    """[('text', ...), ('field', name), ...]; every field exactly once."""
    parts, pos = [], 0
    for m in _FIELD.finditer(template):
        if m.start() > pos:
            parts.append(("text", template[pos:m.start()]))
        if m.group(1) not in FIELDS:
            raise PromptError(f"prompt template: unknown field {{{m.group(1)}}}; fields: {', '.join(FIELDS)}")
        parts.append(("field", m.group(1)))
        pos = m.end()
    if pos < len(template):
        parts.append(("text", template[pos:]))
    names = [p[1] for p in parts if p[0] == "field"]
    for f in FIELDS:
        if names.count(f) != 1:
            raise PromptError(f"prompt template: field {{{f}}} must appear exactly once")
    if names.index("item_cf") < names.index("candidate") or names.index("history") > names.index("candidate"):
        raise PromptError("prompt template: {history} must come before {candidate}, and {item_cf} after it "
                          "(the user prefix is shared by all of a user's candidates)")
    return parts


@dataclass
class Encoded:
    input_ids: list[int]
    user_pos: int  # index of the user CF token in input_ids
    item_pos: int  # index of the item CF token
    candidate_start: int  # first token of the candidate text (every token from here on is the "candidate part")


class PromptBuilder:
    """Turns (history titles, candidate text) into token ids with the two CF slots marked."""

    def __init__(self, tokenizer, template: str = DEFAULT_TEMPLATE, max_tokens: int = 128,
                 candidate_max_tokens: int = 32, history_sep: str = ", "):
        self.tok = tokenizer
        self.parts = parse_template(template)
        self.max_tokens = max_tokens
        self.candidate_max_tokens = candidate_max_tokens
        self.sep_ids = self._ids(history_sep)
        # The CF slot holds a placeholder id; the model overwrites its embedding.
        self.cf_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
        self.prefix_ids, self.suffix_ids = self._specials()
        self._cache: dict[str, list[int]] = {}
        fixed = sum(len(self._ids(t)) for kind, t in self.parts if kind == "text") + 2
        fixed += len(self.prefix_ids) + len(self.suffix_ids)
        if fixed + candidate_max_tokens > max_tokens:
            raise PromptError(f"prompt: template ({fixed} tokens) + candidate_max_tokens ({candidate_max_tokens}) "
                              f"exceeds max_tokens ({max_tokens})")

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _cached(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = self._ids(text)
        return ids

    def _specials(self) -> tuple[list[int], list[int]]:
        """What the tokenizer wraps a sequence in ([CLS] ... [SEP] for BERT, BOS ... for Llama)."""
        probe = self._ids("x")
        full = self.tok("x")["input_ids"]
        i = next(i for i in range(len(full)) if full[i:i + len(probe)] == probe)
        return full[:i], full[i + len(probe):]

    def encode(self, history: Sequence[str], candidate: str) -> Encoded:
        """One pair's prompt: the user prefix followed by the candidate part."""
        prefix, user_pos = self.encode_prefix(history)
        part, slots = self.encode_candidate(candidate)
        item_pos = len(prefix) + slots["item_cf"]
        if user_pos is None:
            user_pos = len(prefix) + slots["user_cf"]
        return Encoded(prefix + part, user_pos, item_pos, len(prefix))

    def encode_prefix(self, history: Sequence[str]) -> tuple[list[int], "int | None"]:
        """(ids before {candidate}, user CF slot index or None when {user_cf} comes after {candidate})."""
        texts = [self._cached(t) for kind, t in self.parts if kind == "text"]
        budget = self.max_tokens - len(self.prefix_ids) - len(self.suffix_ids) - sum(map(len, texts)) - 2 \
            - self.candidate_max_tokens
        ids, user_pos = list(self.prefix_ids), None
        for kind, value in self.parts:
            if kind == "field" and value == "candidate":
                return ids, user_pos
            if kind == "text":
                ids += self._cached(value)
            elif value == "history":
                ids += self._history_ids(history, budget)
            elif value == "user_cf":
                user_pos = len(ids)
                ids.append(self.cf_id)
        raise AssertionError("parse_template guarantees a {candidate} field")

    def encode_candidate(self, candidate: str) -> tuple[list[int], dict]:
        """(ids from {candidate} to the end, {slot: index within them} for the CF slots found there)."""
        ids, slots, started = [], {}, False
        for kind, value in self.parts:
            if kind == "field" and value == "candidate":
                started = True
                ids += self._cached(candidate)[: self.candidate_max_tokens]
            elif not started:
                continue
            elif kind == "text":
                ids += self._cached(value)
            elif value in ("user_cf", "item_cf"):
                slots[value] = len(ids)
                ids.append(self.cf_id)
        return ids + self.suffix_ids, slots

    def _history_ids(self, titles: Sequence[str], budget: int) -> list[int]:
        """Most recent titles first into the budget; the prompt lists them oldest to newest."""
        kept: list[list[int]] = []
        used = 0
        for t in reversed(list(titles)):
            ids = self._cached(t)
            cost = len(ids) + (len(self.sep_ids) if kept else 0)
            if used + cost > budget:
                room = budget - used - (len(self.sep_ids) if kept else 0)
                if room > 0 and not kept:
                    kept.append(ids[:room])  # a single over-long title: keep its beginning
                break
            kept.append(ids)
            used += cost
        out: list[int] = []
        for i, ids in enumerate(reversed(kept)):
            out += (self.sep_ids if i else []) + ids
        return out
