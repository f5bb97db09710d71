"""Pipeline stage names in run order (no pyspark here: the CLI lists them without a JVM)."""
STAGES = ("ingest", "prepare", "idmap", "als", "train", "candidates", "score", "evaluate")
