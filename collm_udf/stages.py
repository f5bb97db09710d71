"""Pipeline stage names in run order (no pyspark here: the CLI lists them without a JVM)."""
STAGES = ("ingest", "prepare", "idmap", "als", "candidates", "score", "evaluate")
