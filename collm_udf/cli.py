"""`collm`: run one pipeline stage, several, or all of them; write a day's evaluation report.

Examples:
  collm run --conf conf/local.yaml                     # every stage, today's ds
  collm run --conf conf/local.yaml --stage score --ds 2026-11-27
  collm run --conf conf/local.yaml --stage als --stage candidates --root /tmp/wh
  collm run --conf conf/databricks.yaml --catalog main --schema recsys --ds 2026-11-27
  collm replay --conf conf/local.yaml --days 4 --every 7   # the daily job over past days, with backtests
  collm report --conf conf/local.yaml --ds 2026-11-27  # HTML report of that day's tables
  collm latest --conf conf/local.yaml                  # the newest complete day of recommendations, its table
  collm stages                                         # list the stages in order

`collm run` and `collm replay` print the summary as one JSON object on the last line of stdout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Callable, Optional, Sequence

from collm_udf.config import ConfigError, Config, load_config
from collm_udf.spark.runs import default_ds
from collm_udf.spark.stages import STAGES, select

# Nothing here imports pyspark at module level: `--help`, `collm stages` and conf errors need no JVM.

RUN_EXAMPLES = """examples:
  collm run --conf conf/local.yaml                                  # all stages, ds = today (UTC)
  collm run --conf conf/local.yaml --stage score --stage evaluate --ds 2026-11-27
  collm run --conf conf/databricks.yaml --catalog main --schema recsys --ds 2026-11-27
  collm run --conf conf/local.yaml --master spark://10.0.0.5:7077 --root /shared/wh   # a standalone cluster
"""
REPLAY_EXAMPLES = """examples:
  collm replay --conf conf/local.yaml --days 4 --every 7        # 4 days a week apart, ending at the newest day
                                                                # whose backtest horizon the data covers
  collm replay --conf conf/example_warehouse.yaml --start 2026-11-01 --end 2026-11-20 --every 1
"""
REPORT_EXAMPLES = """examples:
  collm report --conf conf/local.yaml --ds 2026-11-27               # -> <tables.root>/reports/ds=2026-11-27/
  collm report --conf conf/databricks.yaml --ds 2026-11-27 --out /Volumes/main/recsys/reports/latest
"""
LATEST_EXAMPLES = """examples:
  collm latest --conf conf/local.yaml          # 1998-04-15<TAB>/path/to/warehouse/recommendations
  collm latest --conf conf/databricks.yaml --catalog main --schema recsys --json
      # {"ds": ..., "table": "main.recsys.collm_recommendations", "view": "main.recsys.collm_recommendations_latest"}
  spark.read.format("delta").load(TABLE).where(f"ds = '{DS}'")   # reading that day of a path table
"""
STAGES_EXAMPLES = """examples:
  collm stages                       # ingest prepare idmap als train candidates score evaluate, one a line
"""


def _ds(value: str) -> str:
    """argparse type of --ds: a YYYY-MM-DD date, checked before any Spark starts."""
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD") from None


def _add_target_args(p: argparse.ArgumentParser, ds: bool = True) -> None:
    """--conf, --ds and the overrides of where the tables live (shared by run, report and jobs/<stage>.py)."""
    p.add_argument("--conf", required=True, help="YAML conf, e.g. conf/local.yaml")
    if ds:
        p.add_argument("--ds", type=_ds, help="run date YYYY-MM-DD (default: today, UTC); the run uses only the "
                       "interactions before its cutoff (asof.mode: daily)")
    p.add_argument("--root", help="override tables.root (where path-based Delta tables go)")
    p.add_argument("--catalog", help="override tables.catalog (Unity Catalog catalog of the tables)")
    p.add_argument("--schema", help="override tables.schema (schema/database of the tables)")
    p.add_argument("--models-dir", help="override tables.models_dir (saved models, e.g. /Volumes/main/recsys/models)")


def _add_master_arg(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--master of the commands that create their own session (jobs/<stage>.py take spark-submit's)."""
    p.add_argument("--master", help="override spark.master of the session collm creates, e.g. spark://host:7077 "
                   "for a standalone cluster (ignored when Spark launched collm: spark-submit, a notebook)")
    return p


def _add_run_args(p: argparse.ArgumentParser, stage_choice: bool) -> None:
    _add_target_args(p)
    if stage_choice:
        p.add_argument("--stage", action="append", choices=STAGES,
                       help="stage to run (repeatable); default: all, in order")
    p.add_argument("--run-id", help="run id (default: generated)")


def _sub(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, help_: str,
         epilog: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=help_, epilog=epilog, allow_abbrev=False,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a scheduler's "--cat" must not silently mean --catalog (nor break when options grow).
    p = argparse.ArgumentParser(prog="collm", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_run_args(_add_master_arg(_sub(sub, "run", "run stages of the pipeline for one day", RUN_EXAMPLES)), True)
    rp = _sub(sub, "replay", "run the daily job for a range of days, oldest first, each as of its own ds, and print "
              "each day's backtest and the mean", REPLAY_EXAMPLES)
    _add_target_args(_add_master_arg(rp), ds=False)
    rp.add_argument("--start", type=_ds, help="first day (default: --days before --end)")
    rp.add_argument("--end", type=_ds, help="last day (default: the newest day whose backtest horizon the "
                    "interactions cover)")
    rp.add_argument("--days", type=int, help="number of days ending at --end (instead of --start)")
    rp.add_argument("--every", type=int, default=7, help="days between replayed days (default 7)")
    rp.add_argument("--skip-ingest", action="store_true", help="reuse the interactions and pairs tables as they are")
    _add_target_args(_add_master_arg(_sub(sub, "report", "write the HTML evaluation report of one day and print its "
                                          "path", REPORT_EXAMPLES)))
    sub.choices["report"].add_argument(
        "--out", help="output directory (default: <evaluate.report_dir or <tables.root>/reports>/ds=<ds>)")
    lp = _sub(sub, "latest", "print the newest complete day of recommendations and where its table is "
              "(ds, table[, view]: tab-separated)", LATEST_EXAMPLES)
    _add_target_args(_add_master_arg(lp), ds=False)
    lp.add_argument("--json", action="store_true", help="print one JSON object {ds, table, view} instead")
    _sub(sub, "stages", "list the stages in order", STAGES_EXAMPLES)
    return p


def stage_parser(stage: str) -> argparse.ArgumentParser:
    """The argument parser of jobs/<stage>.py (what a scheduler's task passes must parse here)."""
    if stage != "all":
        select([stage])  # an unknown name is an error listing the stages
    what = "every collm stage in order" if stage == "all" else f"collm stage '{stage}'"
    epilog = (f"examples:\n"
              f"  python jobs/{stage}.py --conf conf/local.yaml --ds 2026-11-27\n"
              f"  spark-submit --master yarn jobs/{stage}.py --conf conf/example_warehouse.yaml --ds 2026-11-27\n"
              f"  (Databricks: spark_python_task jobs/{stage}.py with --conf conf/databricks.yaml --catalog C "
              f"--schema S --ds {{{{job.parameters.ds}}}}; see databricks.yml)\n")
    p = argparse.ArgumentParser(prog=f"jobs/{stage}.py", description=f"spark-submit entry point: {what}.",
                                epilog=epilog, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_args(p, False)
    return p


def conf_overrides(args: argparse.Namespace) -> Optional[dict]:
    """The tables overrides given on the command line, as load_config takes them (None: none given)."""
    tables = {k: v for k, v in (("root", args.root), ("catalog", args.catalog), ("schema", args.schema),
                                ("models_dir", args.models_dir)) if v}
    out = {"tables": tables} if tables else {}
    if getattr(args, "master", None):
        out["spark"] = {"master": args.master}
    return out or None


def _load(args: argparse.Namespace) -> Optional[Config]:
    try:
        return load_config(args.conf, conf_overrides(args))
    except ConfigError as e:
        print(f"collm: {e}", file=sys.stderr)
        return None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def input_errors() -> tuple:
    """The errors that say what is wrong with the input (a missing source, bad rows over the threshold, a lost
    column): `collm` prints them as one line, `collm: ...`, and exits 1, as it prints a conf error and exits 2.
    Any other exception is a bug and keeps its traceback."""
    from collm_udf.datasets import DatasetError
    from collm_udf.spark.data_quality import DataQualityError
    from collm_udf.spark.stages.ingest import SourceError
    from collm_udf.spark.stages.prepare import PrepareError

    return SourceError, DataQualityError, DatasetError, PrepareError


def execute(args: argparse.Namespace, stages: Optional[Sequence[str]],
            progress: Callable[[str], None] = _stderr) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    # pyspark is imported only now: `collm --help` and conf checks work without a JVM.
    from collm_udf.spark import pipeline
    from collm_udf.spark.session import get_spark

    spark = get_spark(cfg, app_name=f"collm-{cfg.name}")
    try:
        summary = pipeline.run(spark, cfg, stages=list(stages) if stages else None, ds=args.ds, run_id=args.run_id,
                               progress=progress)
    except input_errors() as e:
        print(f"collm: {e}", file=sys.stderr, flush=True)
        return 1
    for name, t in summary.get("tables", {}).items():
        print(f"{name:16s} {t['rows']:>9d} rows  {t['location']}")
    summary.get("metrics", {}).pop("per_user", None)  # each truth user's figures: for replays' CIs, not the log
    print(json.dumps(summary, default=str, sort_keys=True), flush=True)
    return 0


def report(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    from collm_udf.spark.report_data import write_report  # lazily: pyspark and matplotlib only when used
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables

    spark = get_spark(cfg, app_name=f"collm-report-{cfg.name}")
    ds = args.ds or default_ds()
    print(write_report(spark, cfg, Tables(spark, cfg.tables), ds, args.out), flush=True)
    return 0


def latest(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    from collm_udf.spark.publish import latest as latest_
    from collm_udf.spark.session import get_spark
    from collm_udf.spark.tables import Tables

    spark = get_spark(cfg, app_name=f"collm-latest-{cfg.name}")
    try:
        day = latest_(Tables(spark, cfg.tables))
    except FileNotFoundError as e:
        print(f"collm: {e}", file=sys.stderr)
        return 1
    print(json.dumps(day) if args.json else "\t".join(v for v in day.values() if v), flush=True)
    return 0


def replay(args: argparse.Namespace, progress: Callable[[str], None] = _stderr) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    from collm_udf.spark import replay as replay_
    from collm_udf.spark.session import get_spark

    spark = get_spark(cfg, app_name=f"collm-replay-{cfg.name}")
    try:
        summary = replay_.run(spark, cfg, start=args.start, end=args.end, days=args.days, every=args.every,
                              skip_ingest=args.skip_ingest, progress=progress,
                              out=lambda line: print(line, flush=True))
    except replay_.ReplayError as e:
        print(f"collm: {e}", file=sys.stderr)
        return 2
    except input_errors() as e:
        print(f"collm: {e}", file=sys.stderr, flush=True)
        return 1
    summary["replay"].pop("per_user", None)  # each truth user's figures, behind the CIs: the benchmarks keep them
    print(json.dumps(summary, default=str, sort_keys=True), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "stages":
        print("\n".join(STAGES))
        return 0
    if args.cmd == "report":
        return report(args)
    if args.cmd == "replay":
        return replay(args)
    if args.cmd == "latest":
        return latest(args)
    return execute(args, args.stage)


def stage_main(stage: str, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of one jobs/<stage>.py file (spark-submit, a Databricks spark_python_task)."""
    args = stage_parser(stage).parse_args(argv)
    return execute(args, None if stage == "all" else [stage])


if __name__ == "__main__":
    sys.exit(main())
