"""The CoLLM scorer as an MLflow pyfunc model. collm_udf/tracking.py logs this file "from code" (MLflow's
models-from-code: the file is copied into the model and run at load time), so nothing is pickled; the weights
are the checkpoint directory, logged as the artifact "checkpoint" and loaded with
collm_udf.core.inference.load_predict_fn (safetensors + JSON, checked against the backbone).

Input, a pandas frame with one row per (user, candidate) pair:
  history       list of the user's recent liked item titles, oldest first (null or empty: none)
  candidate     the candidate item's text
  user_factors  the user's ALS factors, a list of factor_dim floats (null: no user CF token, the no-CF vector)
  item_factors  the item's ALS factors (null: a cold item)
Output: one float score per row (the like logit; higher ranks first), as a numpy array (N,).
The loading environment needs the collm-udf package (and, for a backbone other than the embedded MiniLM, the
backbone directory named in the checkpoint's collm.json).
"""
from __future__ import annotations

from typing import Optional

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

COLUMNS = ("history", "candidate", "user_factors", "item_factors")


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def factor_column(values, dim: int, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A column of factor lists (or nulls) -> factors (N, dim) float32 with zeros where missing, has (N,) bool."""
    f = np.zeros((len(values), dim), np.float32)
    has = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        if _missing(v):
            continue
        a = np.asarray(v, np.float32).ravel()
        if a.size != dim:
            raise ValueError(f"{column}, row {i}: {a.size} factors; the model was trained on {dim}")
        f[i], has[i] = a, True
    return f, has


class CoLLMScorer(PythonModel):
    def load_context(self, context) -> None:
        from collm_udf.core.inference import load_predict_fn

        # The GPU Spark assigned to the task (spark_udf), else the first visible GPU, else the CPU.
        self._predict = load_predict_fn(context.artifacts["checkpoint"])

    def predict(self, context, model_input: pd.DataFrame, params: Optional[dict] = None) -> np.ndarray:
        if "candidate" not in model_input.columns:
            raise ValueError(f"the input frame has no column 'candidate'; columns: {', '.join(COLUMNS)}")
        n, dim = len(model_input), self._predict.model.spec.factor_dim
        nulls = pd.Series([None] * n, index=model_input.index, dtype=object)
        history = [[] if _missing(h) else [str(t) for t in h] for h in model_input.get("history", nulls)]
        user_f, user_has = factor_column(list(model_input.get("user_factors", nulls)), dim, "user_factors")
        item_f, item_has = factor_column(list(model_input.get("item_factors", nulls)), dim, "item_factors")
        candidate = ["" if _missing(c) else str(c) for c in model_input["candidate"]]
        return self._predict(history, candidate, user_f, item_f, user_has, item_has)


mlflow.models.set_model(CoLLMScorer())
