"""spark-submit entry point: every collm stage in order. Run with --help for options."""
import sys

from collm_udf.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("all"))
