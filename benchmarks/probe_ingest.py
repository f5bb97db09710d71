"""make probe-ingest: garble a copy of ML-100K in every way issue 18 found, ingest it through conf/local.yaml, and
check that every garbled row is counted in data_quality or refused.

The copy (u.data and u.item from COLLM_DATA_DIR) gets --fraction of its rows garbled in each way, on disjoint rows
chosen with --seed. The ingest stage runs three times on it: on the clean copy (nothing may be flagged), on the
garbled copy with interactions.max_bad_fraction raised so that the stage finishes and every check reports, and
through `collm run` with the shipped threshold (the dropped rows exceed it: refused with one line), plus the
missing-file cases. Writes benchmarks/results/ingest-probe-<dataset>.json: per kind of garbage the rows planted,
the data_quality check that counts them and its rows, and unflagged = planted - counted.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collm_udf.datasets import dataset_dir  # noqa: E402

MALFORMED = "malformed CSV row"
# kind -> (file, the check that counts it, other checks that also count it)
KINDS = {
    "user id written as N.0": ("u.data", "user id written as a decimal", ()),
    "item id written as N.0": ("u.data", "item id written as a decimal", ()),
    "negative Unix timestamp": ("u.data", "timestamp at or before 1970-01-01", ()),
    "timestamp in milliseconds (mixed units)": ("u.data", "timestamp in the future", ()),
    "timestamp after the backfilled day's cutoff": ("u.data", "at or after the cutoff of", ()),
    "extra field in the row": ("u.data", MALFORMED, ()),
    "rating 99": ("u.data", "rating above 5", ()),
    "rating not a number (five)": ("u.data", "rating null or NaN", (MALFORMED,)),
    "NUL byte in the title": ("u.item", "text with NUL or other control characters", ()),
    'title with doubled quotes ""': ("u.item", 'text with doubled quotes ""', ()),
    "extra field in the catalog row": ("u.item", MALFORMED, ()),
    "catalog item id written as N.0": ("u.item", "item id written as a decimal", ()),
}


DROPPED = ("negative Unix timestamp", "timestamp in milliseconds (mixed units)", "extra field in the row",
           "rating 99", "rating not a number (five)")


def garble(src: Path, out: Path, fraction: float, seed: int, cutoff_s: int) -> tuple[dict, dict]:
    """Write the garbled copy to `out`; returns kind -> rows planted, and the distinct users and items of u.data
    without the rows planted to be dropped (what the interactions table must hold)."""
    rng = np.random.RandomState(seed)
    planted, gone = {}, set()
    data = [line.split("\t") for line in (src / "u.data").read_text().splitlines()]
    items = [line.split("|") for line in (src / "u.item").read_bytes().decode("latin-1").splitlines() if line]
    for file, rows in (("u.data", data), ("u.item", items)):
        kinds = [k for k, v in KINDS.items() if v[0] == file]
        n = max(1, round(fraction * len(rows)))
        order = rng.permutation(len(rows))
        for j, kind in enumerate(kinds):
            for i in order[j * n:(j + 1) * n]:
                apply(kind, rows[i], rng, cutoff_s)
                if kind in DROPPED:
                    gone.add(i)
            planted[kind] = n
    clean = [line.split("\t") for line in (src / "u.data").read_text().splitlines()]
    kept = [r for i, r in enumerate(clean) if i not in gone]
    expect = {"users": len({r[0] for r in kept}), "items": len({r[1] for r in kept})}
    (out / "u.data").write_text("".join("\t".join(r) + "\n" for r in data))
    (out / "u.item").write_bytes("".join("|".join(r) + "\n" for r in items).encode("latin-1"))
    return planted, expect


def apply(kind: str, r: list, rng, cutoff_s: int) -> None:
    if kind == "user id written as N.0":
        r[0] += ".0"
    elif kind == "item id written as N.0":
        r[1] += ".0"
    elif kind == "negative Unix timestamp":
        r[3] = "-" + r[3]
    elif kind == "timestamp in milliseconds (mixed units)":
        r[3] += "000"
    elif kind == "timestamp after the backfilled day's cutoff":
        r[3] = str(cutoff_s + int(rng.randint(0, 7 * 86400)))
    elif kind in ("extra field in the row", "extra field in the catalog row"):
        r.append("extra")
    elif kind == "rating 99":
        r[2] = "99"
    elif kind == "rating not a number (five)":
        r[2] = "five"
    elif kind == "NUL byte in the title":
        r[1] = r[1].replace(" ", "\x00", 1) if " " in r[1] else r[1] + "\x00"
    elif kind == 'title with doubled quotes ""':
        r[1] = f'"{r[1]} ""Director\'s Cut"""'
    elif kind == "catalog item id written as N.0":
        r[0] += ".0"
    else:
        raise ValueError(kind)


def conf_dict(src: Path, root: Path, **interactions) -> dict:
    d = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    d["tables"] = {"root": str(root)}
    d["interactions"]["source"]["path"] = str(src / "u.data")
    d["interactions"].update(interactions)
    d["items"]["source"]["path"] = str(src / "u.item")
    return d


def ingest(spark, d: dict, ds: str):
    from collm_udf.config import config_from_dict
    from collm_udf.spark import pipeline
    from collm_udf.spark.tables import Tables

    cfg = config_from_dict(d)
    summary = pipeline.run(spark, cfg, stages=["ingest"], ds=ds, run_id="probe")
    return summary, Tables(spark, cfg.tables)


def cli_run(d: dict, path: Path, ds: str) -> tuple[int, str]:
    """`collm run --stage ingest` in this process (its Spark session): exit code and the last stderr line."""
    from collm_udf import cli

    path.write_text(yaml.safe_dump(d))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["run", "--conf", str(path), "--stage", "ingest", "--ds", ds])
    lines = err.getvalue().strip().splitlines()
    return code, (lines[-1] if lines else "") + (" [TRACEBACK]" if "Traceback" in err.getvalue() else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--fraction", type=float, default=0.005, help="share of the rows garbled in each way")
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--ds", default="1998-04-23", help="the backfilled day (ML-100K ends on 1998-04-22)")
    p.add_argument("--max-bad-fraction", type=float, default=0.05, help="for the run that must finish")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from collm_udf.spark.asof import micros
    from collm_udf.spark.session import local_session

    t0 = time.time()
    cutoff_s = micros(dt.datetime.fromisoformat(args.ds).replace(tzinfo=dt.timezone.utc)) // 10**6
    spark = local_session("local[2]", {"spark.sql.shuffle.partitions": "4"}, app_name="collm-probe-ingest")
    work = Path(tempfile.mkdtemp(prefix="collm-probe-"))
    try:
        clean, dirty = work / "clean", work / "garbled"
        clean.mkdir()
        dirty.mkdir()
        src = dataset_dir(args.dataset, download=False)
        for f in ("u.data", "u.item"):
            shutil.copy(src / f, clean / f)
        planted, expect = garble(src, dirty, args.fraction, args.seed, cutoff_s)

        base, _ = ingest(spark, conf_dict(clean, work / "wh-clean"), args.ds)
        summary, tables = ingest(spark, conf_dict(dirty, work / "wh", max_bad_fraction=args.max_bad_fraction),
                                 args.ds)
        found = summary["data_quality"]
        inter = tables.read("interactions")
        rows = []
        for kind, n in planted.items():
            file, check, _ = KINDS[kind]
            table = "interactions" if file == "u.data" else "items"
            hits = [f for f in found if f["check"].startswith(check) and f["table"].startswith(table)]
            if check.endswith("written as a decimal") and file == "u.data":
                column = "user_id" if kind.startswith("user") else "item_id"
                hits = [f for f in hits if f["column"] == column]
            check_rows = sum(f["rows"] for f in hits)
            # rows of the other kinds that this check counts too (a 'five' rating is also a malformed CSV row)
            shared = sum(planted[k] for k, v in KINDS.items() if k != kind and v[0] == file
                         and (v[1] == check or check in v[2]))
            counted = check_rows - shared
            rows.append({"kind": kind, "file": file, "planted": n, "check": hits[0]["check"] if hits else check,
                         "check_rows": check_rows, "of_other_kinds": shared, "counted": counted,
                         "action": hits[0]["action"] if hits else None, "unflagged": n - counted,
                         "example": hits[0]["example"] if hits else None})

        refused = []
        code, line = cli_run(conf_dict(dirty, work / "wh-default"), work / "default.yaml", args.ds)
        refused.append({"case": "the garbled copy at the shipped interactions.max_bad_fraction", "exit": code,
                        "message": line})
        code, line = cli_run(conf_dict(dirty / "missing", work / "wh-missing"), work / "missing.yaml", args.ds)
        refused.append({"case": "interactions file missing", "exit": code, "message": line})
        d = conf_dict(dirty, work / "wh-missing-items", max_bad_fraction=args.max_bad_fraction)
        d["items"]["source"]["path"] = str(dirty / "u.item.missing")
        code, line = cli_run(d, work / "missing-items.yaml", args.ds)
        refused.append({"case": "items file missing", "exit": code, "message": line})

        out = {
            "dataset": args.dataset, "seed": args.seed, "fraction_per_kind": args.fraction, "ds": args.ds,
            "max_bad_fraction_of_the_counting_run": args.max_bad_fraction,
            "clean_copy_findings": base["data_quality"],
            "table": rows,
            "unflagged_total": sum(r["unflagged"] for r in rows),
            "dropped_rows": summary["stages"]["ingest"]["dropped_rows"],
            "planted_rows_to_drop": sum(planted[k] for k in DROPPED),
            "interactions_written": summary["stages"]["ingest"]["interactions"],
            "distinct_users": inter.select("user_id").distinct().count(),
            "distinct_items": inter.select("item_id").distinct().count(),
            "expected_distinct_users_items": expect,
            "catalog_items": summary["stages"]["ingest"]["items"],
            "all_findings": found,
            "refused": refused,
            "wall_s": round(time.time() - t0, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # passed: nothing unflagged, nothing flagged on the clean copy, exactly the planted rows dropped, one entity
    # per id, and every refusal one line without a traceback
    out["passed"] = ok = (
        out["unflagged_total"] == 0 and not out["clean_copy_findings"]
        and out["dropped_rows"] == out["planted_rows_to_drop"]
        and (out["distinct_users"], out["distinct_items"]) == (expect["users"], expect["items"])
        and all(r["exit"] == 1 and r["message"].startswith("collm: ") and "TRACEBACK" not in r["message"]
                for r in refused))
    path = Path(args.out or ROOT / "benchmarks" / "results" / f"ingest-probe-{args.dataset}.json")
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    w = max(len(r["kind"]) for r in rows)
    print(f"{'kind':{w}s}  planted  counted  unflagged  action")
    for r in rows:
        print(f"{r['kind']:{w}s}  {r['planted']:7d}  {r['counted']:7d}  {r['unflagged']:9d}  {r['action']}")
    for r in refused:
        print(f"refused ({r['case']}): exit {r['exit']}: {r['message'][:200]}")
    print(f"clean copy findings: {len(out['clean_copy_findings'])}; users {out['distinct_users']}, items "
          f"{out['distinct_items']} (expected {expect['users']}, {expect['items']}); dropped {out['dropped_rows']} "
          f"of {out['planted_rows_to_drop']} planted to drop; "
          f"-> {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
