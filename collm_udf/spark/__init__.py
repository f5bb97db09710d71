"""Spark glue: every module that imports pyspark lives in this package (the scoring core never does)."""
