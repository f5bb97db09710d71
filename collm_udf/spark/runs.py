"""A run's day and id: the default run date (today, UTC) and new run ids, computed here and nowhere else. No
pyspark at import (the CLI uses them without a JVM)."""
from __future__ import annotations

import datetime as dt
import uuid


def default_ds() -> str:
    """The run date when none is given: today, UTC."""
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def new_run_id(ds: str) -> str:
    return f"run_{ds.replace('-', '')}_{dt.datetime.now(dt.timezone.utc):%H%M%S}_{uuid.uuid4().hex[:6]}"
