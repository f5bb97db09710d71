"""spark-submit entry point: collm stage 'ingest'. Run with --help for options."""
import sys

from collm_udf.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("ingest"))
