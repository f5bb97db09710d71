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

from collm_udf.core.pairs import factor_matrix, missing

COLUMNS = ("history", "candidate", "user_factors", "item_factors")


class CoLLMPyfunc(PythonModel):
    """The CoLLM scorer as an MLflow pyfunc: a pandas frame of history titles, candidate text and factors in,
    scores out (the Spark scorer is collm_udf/spark/scorers/collm.py)."""

    def load_context(self, context) -> None:
        from collm_udf.core.inference import load_predict_fn, pick_device
        from collm_udf.spark.task import task_gpu_addresses

        # The GPU Spark assigned to the task (spark_udf), else the first visible GPU, else the CPU.
        device = str(pick_device(None, task_gpu_addresses()))
        self._predict = load_predict_fn(context.artifacts["checkpoint"], device)

    def predict(self, context, model_input: pd.DataFrame, params: Optional[dict] = None) -> np.ndarray:
        if "candidate" not in model_input.columns:
            raise ValueError(f"the input frame has no column 'candidate'; columns: {', '.join(COLUMNS)}")
        n, dim = len(model_input), self._predict.model.spec.factor_dim
        nulls = pd.Series([None] * n, index=model_input.index, dtype=object)
        history = [[] if missing(h) else [str(t) for t in h] for h in model_input.get("history", nulls)]
        user_f, user_has = factor_matrix(list(model_input.get("user_factors", nulls)), dim, "user_factors")
        item_f, item_has = factor_matrix(list(model_input.get("item_factors", nulls)), dim, "item_factors")
        candidate = ["" if missing(c) else str(c) for c in model_input["candidate"]]
        return self._predict(history, candidate, user_f, item_f, user_has, item_has)


mlflow.models.set_model(CoLLMPyfunc())
