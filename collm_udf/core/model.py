"""The CoLLM scorer: text prompt + two CF tokens (projected ALS factors) -> a like logit. Pure torch/transformers.

Top-down:
  rows: R prompts of T tokens; a row is a user prefix plus one candidate part, or (packed) several candidate
        parts of the same user; see collm_udf/core/batching.py for the row format
  1. token embeddings of the rows                         (R, T, H)
  2. projector(factors) -> CF vectors                     (K, H)   CoLLM's MLP: d -> 10d -> H, ReLU
     missing factors (cold user/item) -> a learned no-CF vector per slot kind, never random noise
  3. CF vectors overwrite the embeddings at their slots   (R, T, H)
  4. backbone on inputs_embeds with block attention: prefix sees prefix; a candidate sees prefix + itself
     (collm_udf/core/attention.py computes it without a dense mask; its segment_mask is the reference)
  5. score:  encoder -> [mean of prefix ; mean of candidate part] -> Linear(2H, 1)   (J,)
             causal  -> logit of the answer token "Yes" at the candidate's last token (J,)  (as CoLLM/TALLRec)
  6. + skip: Linear(F, 1), or F -> skip_hidden -> 1 with a ReLU, over the candidate's standardised signals
             (collm_udf/core/signals.py: u . v, item and user statistics as of the cutoff), when the spec names any;
             with skip_segments it reads [x ; x * warm] (J, 2F): warm pairs (both factors) get their own weights;
             with lm_scale the LM's logit of step 5 is first multiplied by a learned scalar, with lm_segments
             by one of three, the pair's segment's (warm, cold item, user without factors), and the
             segment's own offset joins the skip's part; lm_warm false holds the warm weight at 0     (J,)
The backbone's weights never learn the CF channel: stage 2 trains only the projector, the no-CF vectors and
the skip (with its LM scale).
Nothing here imports pyspark.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from collm_udf.core import attention
from collm_udf.core.attention import segment_mask
from collm_udf.core.spec import ModelError, ModelSpec


def load_backbone(spec: ModelSpec):
    """(backbone module, tokenizer) from a local directory; never downloads (HF_HUB_OFFLINE=1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = spec.backbone_dir()
    if not Path(path, "config.json").is_file():
        raise ModelError(f"backbone {path!r}: not a local Hugging Face model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token is None:  # Llama-style tokenizers have none; padding is masked, any id will do
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    cls = AutoModel if spec.kind == "encoder" else AutoModelForCausalLM
    model = cls.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, tok


def pool_segments(h: torch.Tensor, segment: torch.Tensor, out_row, out_seg) -> torch.Tensor:
    """Per candidate, [mean over the prefix ; mean over its own candidate part]: (R, T, H) -> (J, 2H).

    Two means, not one: under the segment mask only candidate tokens see both sides, and a single mean over
    ~60 tokens drowns their ~10 (measured on ML-100K: text-only UAUC 0.53 with one mean)."""
    R, T, H = h.shape
    S = int(segment.max()) + 2  # segments 0..max, plus a bin for padding
    idx = torch.where(segment >= 0, segment, S - 1)  # (R, T)
    sums = h.new_zeros(R, S, H).scatter_add_(1, idx.unsqueeze(-1).expand(R, T, H), h)
    counts = h.new_zeros(R, S).scatter_add_(1, idx, torch.ones_like(h[..., 0])).clamp(min=1.0).unsqueeze(-1)
    prefix = sums[out_row, 0] / counts[out_row, 0]  # (J, H)
    cand = sums[out_row, out_seg] / counts[out_row, out_seg]  # (J, H)
    return torch.cat([prefix, cand], dim=-1)


class Projector(nn.Module):
    """CoLLM's MLP mapping ALS factors into the token-embedding space: d -> mult*d -> H."""

    def __init__(self, factor_dim: int, hidden: int, mult: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(factor_dim, mult * factor_dim), nn.ReLU(),
                                 nn.Linear(mult * factor_dim, hidden))

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., H)
        return self.net(f)


SEGMENTS = ("warm", "cold_item", "no_factors")  # lm_segments' weights, in this order


class CoLLM(nn.Module):
    def __init__(self, spec: ModelSpec, backbone: nn.Module, answer_id: Optional[int] = None):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        H = spec.hidden_size
        self.projector = Projector(spec.factor_dim, H, spec.projector_mult)
        # One learned no-CF vector per slot (user, item), initialised at the scale of real token embeddings.
        emb = backbone.get_input_embeddings().weight
        self.no_cf = nn.Parameter(emb.detach().std() * torch.randn(2, H, generator=torch.Generator().manual_seed(0)))
        self.head = nn.Linear(2 * H, 1) if spec.kind == "encoder" else None  # on [prefix ; candidate] means
        # The signals' skip starts at zero: before stage 2 the model scores as if it had none.
        F_, h = len(spec.signals) * (2 if spec.skip_segments else 1), spec.skip_hidden
        self.skip = None if not F_ else (nn.Linear(F_, 1) if not h else
                                         nn.Sequential(nn.Linear(F_, h), nn.ReLU(), nn.Linear(h, 1)))
        if self.skip is not None:
            last = self.skip if not h else self.skip[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # What the LM's logit counts against the skip: 1 until stage 2 (or the logistic start) learns it; with
        # lm_segments one per segment (SEGMENTS), so the LM can count where CF is missing and not elsewhere.
        self.lm_scale = None if not spec.lm_scale else \
            nn.Parameter(torch.ones(len(SEGMENTS) if spec.lm_segments else ()))
        # ... and each segment its own offset in the signals' part: an LM weighed apart per segment shifts each
        # segment's scores by its weight times the LM's mean logit, which one bias cannot undo (0 for warm pairs:
        # the skip's bias is theirs)
        self.segment_bias = nn.Parameter(torch.zeros(len(SEGMENTS))) if spec.lm_segments else None
        self.set_signal_scale(spec.signal_mean or [0.0] * len(spec.signals),
                              spec.signal_std or [1.0] * len(spec.signals))
        if spec.kind == "causal" and answer_id is None:
            raise ModelError("causal backbone: the answer token id is required")
        self.answer_id = answer_id
        # How block attention runs (not part of the spec: all are exact). "split" (collm_udf/core/attention.py, no
        # dense mask) where the backbone supports pluggable attention, else "dense" (segment_mask). "auto": split
        # on a GPU, where a dense mask keeps SDPA off its flash kernels and spends most of its work on masked
        # pairs; dense on CPU, where attention is ~10% of the time and the split's gathers cost as much as they
        # save (measured: MiniLM, 50 candidates per user, 2 cores, within 5%).
        self.block_kernel = "auto"

    def set_signal_scale(self, mean, std) -> None:
        """Standardise the signals by (mean, std) (of the stage-2 training set); recorded in the spec. The buffers
        go where the model is: init_skip calls this after the model has moved to its training device."""
        self.spec = self.spec.with_(signal_mean=[float(m) for m in mean],
                                    signal_std=[max(float(s), 1e-6) for s in std])
        dev = self.projector.net[0].weight.device
        for name, values in (("_sig_mean", self.spec.signal_mean), ("_sig_std", self.spec.signal_std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32, device=dev), persistent=False)

    # -------------------------------------------------------------------------------- forward
    def cf_vectors(self, slot_kind, slot_f, slot_has) -> torch.Tensor:
        """(K, H): projected factors, or the slot kind's no-CF vector where factors are missing."""
        proj = self.projector(slot_f)  # (K, d) -> (K, H)
        return torch.where(slot_has.unsqueeze(-1), proj, self.no_cf.to(proj.dtype)[slot_kind])

    def embed(self, input_ids, slot_row, slot_pos, cf) -> torch.Tensor:
        """Token embeddings with the CF vectors written into their slots: (R, T, H)."""
        emb = self.backbone.get_input_embeddings()(input_ids).clone()
        emb[slot_row, slot_pos] = cf.to(emb.dtype)
        return emb

    def forward(self, *, input_ids, segment, position_ids, slot_row, slot_pos, slot_kind, slot_f, slot_has,
                out_row, out_seg, out_last, out_x=None, parts: bool = False) -> torch.Tensor:
        """Rows (see collm_udf/core/batching.py) -> one logit per candidate, (J,). out_x (J, F): the candidates'
        signals; None leaves the skip out (text-only scoring). parts: (J, 2) instead, the logit's two addends
        [the LM's part (its logit times lm_scale) ; the skip's part (bias included; 0 without a skip)]."""
        logit = self._lm_logit(input_ids=input_ids, segment=segment, position_ids=position_ids, slot_row=slot_row,
                               slot_pos=slot_pos, slot_kind=slot_kind, slot_f=slot_f, slot_has=slot_has,
                               out_row=out_row, out_seg=out_seg, out_last=out_last)
        if self.skip is None or out_x is None:
            return torch.stack([logit, torch.zeros_like(logit)], -1) if parts else logit
        if out_x.shape != (logit.shape[0], len(self.spec.signals)):
            raise ModelError(f"signals: got {tuple(out_x.shape)} for {logit.shape[0]} candidates and the model's "
                             f"{len(self.spec.signals)} signals ({', '.join(self.spec.signals)})")
        with torch.autocast(out_x.device.type, enabled=False):  # a handful of numbers: kept in fp32
            sig = self.skip(self.skip_inputs(out_x)).squeeze(-1)
            if self.spec.lm_segments:  # the pair's segment picks its LM weight and its offset
                seg = self.segment(out_x)
                lm, sig = logit.float() * self.lm_weight()[seg], sig + self.segment_bias[seg]
            else:
                lm = logit.float() if self.lm_scale is None else logit.float() * self.lm_scale
            return torch.stack([lm, sig], -1) if parts else lm + sig

    def segment(self, out_x: torch.Tensor) -> torch.Tensor:
        """(J,) long: each pair's index in SEGMENTS, from its raw signals - a user without factors first, then an
        item with fewer than spec.cold_item_below interactions before the cutoff (item_count = log1p(count))."""
        names = self.spec.signals
        no_factors = out_x[:, names.index("user_missing")].float() > 0.5
        cold = out_x[:, names.index("item_count")].float() < math.log1p(self.spec.cold_item_below - 0.5)
        return torch.where(no_factors, 2, torch.where(cold, 1, 0))

    def lm_weight(self) -> torch.Tensor:
        """lm_scale as the score uses it: () or (len(SEGMENTS),); with lm_warm false the warm weight is 0 (no
        gradient reaches lm_scale[0], which stays at init_skip's 0)."""
        if self.spec.lm_segments and not self.spec.lm_warm:
            return torch.cat([torch.zeros_like(self.lm_scale[:1]), self.lm_scale[1:]])
        return self.lm_scale

    def lm_weights(self):
        """What the LM's logit counts (the run summary): lm_scale, or with lm_segments {segment: its weight}."""
        w = [round(float(v), 4) for v in self.lm_weight().detach().reshape(-1).cpu()]
        return dict(zip(SEGMENTS, w)) if self.spec.lm_segments else w[0]

    def skip_inputs(self, out_x: torch.Tensor) -> torch.Tensor:
        """(J, F) signals -> the skip's input: standardised, (J, F); with skip_segments [x ; x * warm] (J, 2F)."""
        x = (out_x.float() - self._sig_mean) / self._sig_std
        if self.spec.skip_segments:
            warm = 1.0 - out_x[:, self.spec.signals.index("als_missing")].float().unsqueeze(-1)
            x = torch.cat([x, x * warm], dim=-1)
        return x

    def _lm_logit(self, *, input_ids, segment, position_ids, slot_row, slot_pos, slot_kind, slot_f, slot_has,
                  out_row, out_seg, out_last) -> torch.Tensor:
        emb = self.embed(input_ids, slot_row, slot_pos, self.cf_vectors(slot_kind, slot_f, slot_has))
        causal = self.spec.kind == "causal"
        hf = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        net = hf.get_decoder() if causal else hf  # a causal LM's decoder: only the answer position needs the head
        one_per_row = out_row.shape[0] == input_ids.shape[0]
        if one_per_row and (causal or self.spec.attention == "full"):
            # A causal LM never lets the prefix see the candidate anyway: the plain padding mask keeps the
            # fastest attention kernels.
            h = net(inputs_embeds=emb, attention_mask=(segment >= 0).long(), position_ids=position_ids)
        elif (self._block_kernel(emb.device) == "split" and attention.supported(hf)
              and not (self.training and any(getattr(m, "gradient_checkpointing", False) for m in hf.modules()))):
            # (gradient checkpointing recomputes attention in backward, outside this pass's switch: dense there)
            with attention.use_block_attention(hf, attention.Layout.of(segment, causal)):
                h = net(inputs_embeds=emb, attention_mask=None, position_ids=position_ids)
        else:  # the reference: one dense (R, 1, T, T) mask
            h = net(inputs_embeds=emb, attention_mask=segment_mask(segment, causal, emb.dtype),
                    position_ids=position_ids)
        h = h.last_hidden_state
        if not causal:
            return self.head(pool_segments(h, segment, out_row, out_seg)).squeeze(-1).float()
        last = h[out_row, out_last]  # (J, H): only the answer position of each candidate reaches the LM head
        lm_head = hf.get_output_embeddings()
        logit = last @ lm_head.weight[self.answer_id].to(last.dtype)
        if getattr(lm_head, "bias", None) is not None:
            logit = logit + lm_head.bias[self.answer_id]
        return logit.float()

    def _block_kernel(self, device: torch.device) -> str:
        if self.block_kernel not in ("auto", "split", "dense"):
            raise ModelError(f"block_kernel: {self.block_kernel!r} is not auto, split or dense")
        if self.block_kernel == "auto":
            return "dense" if device.type == "cpu" else "split"
        return self.block_kernel

    # -------------------------------------------------------------------------------- training stages
    def set_stage(self, stage: str) -> None:
        """text: backbone (full or LoRA) + head + no-CF learn; cf: only the projector and no-CF vectors learn."""
        for p in self.parameters():
            p.requires_grad_(False)
        if stage == "text":
            if self.spec.tuning == "full":
                for p in self.backbone.parameters():
                    p.requires_grad_(True)
            elif self.spec.tuning == "lora":
                for n, p in self.backbone.named_parameters():
                    if "lora_" in n:
                        p.requires_grad_(True)
            if self.head is not None:
                for p in self.head.parameters():
                    p.requires_grad_(True)
        elif stage == "cf":
            for p in self.projector.parameters():
                p.requires_grad_(True)
            self.no_cf.requires_grad_(True)
            if self.skip is not None:
                for p in self.skip.parameters():
                    p.requires_grad_(True)
            for p in (self.lm_scale, self.segment_bias):
                if p is not None:
                    p.requires_grad_(True)
        else:
            raise ModelError(f"unknown training stage {stage!r}")

    def saved_state(self) -> dict[str, torch.Tensor]:
        """Every tensor that is not the stock backbone: projector, no-CF, head, and tuned backbone weights."""
        keep = {}
        for n, t in self.state_dict().items():
            if n.startswith("backbone."):
                tuned = (self.spec.tuning == "full") or (self.spec.tuning == "lora" and "lora_" in n)
                if not tuned:
                    continue
            keep[n] = t.detach().to("cpu").contiguous().clone()
        return keep


def apply_lora(spec: ModelSpec, backbone: nn.Module) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj"] if spec.kind == "causal" else ["query", "value"]
    cfg = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules=targets, lora_dropout=0.0)
    return get_peft_model(backbone, cfg)


def build(spec: ModelSpec):
    """(CoLLM, tokenizer) for a spec: backbone loaded from its local directory, LoRA applied if tuned so. The
    model holds a copy of the spec completed with the backbone's hash and width (model.spec)."""
    sha = hashlib.sha1(Path(spec.backbone_dir(), "config.json").read_bytes()).hexdigest() \
        if Path(spec.backbone_dir(), "config.json").is_file() else None
    if spec.backbone_sha is not None and sha != spec.backbone_sha:
        raise ModelError(f"backbone {spec.backbone_dir()!r} is not the one this model was trained on "
                         f"(config.json sha1 {sha} != {spec.backbone_sha})")
    backbone, tok = load_backbone(spec)
    spec = spec.with_(backbone_sha=sha, hidden_size=backbone.get_input_embeddings().weight.shape[1])
    answer_id = None
    if spec.kind == "causal":
        ids = tok(spec.answer_token, add_special_tokens=False)["input_ids"]
        answer_id = ids[0]
    if spec.tuning == "lora":
        backbone = apply_lora(spec, backbone)
    return CoLLM(spec, backbone, answer_id), tok
