"""spark-submit entry point: collm stage 'train'. Run with --help for options."""
import sys

from collm_udf.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("train"))
