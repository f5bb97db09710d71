"""The Databricks Asset Bundle (databricks.yml + resources/*.yml) against the code it schedules.

No Databricks CLI or workspace here: the YAML is parsed, bundle (${...}) and dynamic ({{...}}) references are
substituted with plausible values, and every task's parameters go through the real argument parser of its
jobs/<stage>.py entry point (collm_udf.cli.stage_parser), and the conf they name through the real conf loader.
Nothing starts Spark.
"""
from __future__ import annotations

import ast
import glob
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import ROOT
import yaml

from collm_udf.cli import conf_overrides, stage_parser
from collm_udf.config import load_config
from collm_udf.spark.stages import STAGES

DAILY = ["ingest", "prepare", "idmap", "als", "candidates", "score", "evaluate"]  # README's order, train aside
WEEKLY = ["train"]
DS = "2026-11-27"
BUNDLE_REF = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
DYNAMIC_REF = re.compile(r"\{\{\s*([A-Za-z0-9_.`\-]+)\s*\}\}")
DYNAMIC_VALUES = {"job.parameters.ds": DS, "job.start_time.iso_date": DS}
MAX_ENTRY_POINT_LINES = 30


# ----------------------------------------------------------------------------------------------- loading
def load_bundle(root: Path = ROOT) -> dict[str, Any]:
    """databricks.yml with its `include` files: {'main': ..., 'resources': {path: parsed}}."""
    main = yaml.safe_load((root / "databricks.yml").read_text())
    files: dict[Path, Any] = {}
    for pattern in main.get("include", []):
        for f in sorted(glob.glob(str(root / pattern))):
            files[Path(f)] = yaml.safe_load(Path(f).read_text())
    return {"main": main, "resources": files}


def jobs(bundle: dict[str, Any]) -> Iterator[tuple[Path, str, dict]]:
    """(file, job key, job) for every job of every included file."""
    for path, doc in bundle["resources"].items():
        for key, job in ((doc or {}).get("resources", {}).get("jobs") or {}).items():
            yield path, key, job


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def substitute(value: str, variables: dict[str, Any], root: Path = ROOT) -> str:
    """Resolve ${var.x} (its default), ${workspace.file_path} (the repo: the bundle syncs it there) and the
    {{job...}} references the tasks use; anything else is an error, so a new reference gets a test value."""
    def bundle_ref(m: re.Match) -> str:
        ref = m.group(1)
        if ref.startswith("var."):
            return str(variables[ref[4:]]["default"])
        if ref == "workspace.file_path":
            return str(root)
        if ref == "bundle.target":
            return "dev"
        raise AssertionError(f"unexpected bundle reference ${{{ref}}} in {value!r}")

    def dynamic_ref(m: re.Match) -> str:
        if m.group(1) not in DYNAMIC_VALUES:
            raise AssertionError(f"unexpected dynamic value reference {{{{{m.group(1)}}}}} in {value!r}")
        return DYNAMIC_VALUES[m.group(1)]

    return DYNAMIC_REF.sub(dynamic_ref, BUNDLE_REF.sub(bundle_ref, value))


# ----------------------------------------------------------------------------------------------- checks
def check_entry_point(path: Path) -> str:
    """A thin jobs/<stage>.py: at most MAX_ENTRY_POINT_LINES lines, imports only sys and stage_main, and calls
    stage_main with its own stage name. Returns the stage."""
    stage = path.stem
    assert stage in STAGES or stage == "all", f"{path}: not a stage name"
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_ENTRY_POINT_LINES, f"{path}: not a thin entry point"
    tree = ast.parse(text)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    assert imported <= {"sys", "collm_udf.cli.stage_main"}, f"{path}: imports {sorted(imported)}"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "stage_main"]
    assert len(calls) == 1 and isinstance(calls[0].args[0], ast.Constant) and calls[0].args[0].value == stage, \
        f"{path}: must call stage_main({stage!r})"
    return stage


def check_task_parameters(stage: str, params: list[str]) -> Any:
    """The entry point's real parser must accept the task's (substituted) parameters; argparse exits otherwise."""
    return stage_parser(stage).parse_args(params)


# ----------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return load_bundle()


def test_bundle_has_name_targets_variables_and_a_wheel_artifact(bundle):
    main = bundle["main"]
    assert main["bundle"]["name"]
    assert "dev" in main["targets"] and "prod" in main["targets"]
    assert {"catalog", "schema"} <= set(main["variables"])
    wheels = [a for a in main["artifacts"].values() if a.get("type") == "whl"]
    assert len(wheels) == 1 and ("pip wheel" in wheels[0]["build"] or "-m build" in wheels[0]["build"])
    assert (ROOT / wheels[0].get("path", ".") / "pyproject.toml").is_file()
    assert bundle["resources"], "include matched no resources/*.yml"


def test_every_variable_used_is_declared(bundle):
    declared = set(bundle["main"].get("variables", {}))
    used = {ref[4:] for doc in [bundle["main"], *bundle["resources"].values()] for s in strings(doc)
            for ref in BUNDLE_REF.findall(s) if ref.startswith("var.")}
    assert used, "no ${var.*} used: the catalog and schema must come from bundle variables"
    assert used <= declared, f"undeclared variables: {sorted(used - declared)}"
    for name, v in bundle["main"]["variables"].items():
        assert "default" in v and v.get("description"), f"variable {name}: give a default and a description"


def test_jobs_are_scheduled_with_a_ds_parameter_defaulting_to_the_run_date(bundle):
    found = {key: job for _, key, job in jobs(bundle)}
    assert len(found) == 2, sorted(found)
    for key, job in found.items():
        assert job["schedule"]["quartz_cron_expression"] and job["schedule"]["timezone_id"], key
        params = {p["name"]: p["default"] for p in job["parameters"]}
        assert params["ds"] == "{{job.start_time.iso_date}}", key
        assert job.get("max_concurrent_runs") == 1, f"{key}: concurrent runs of one day would race"


def test_every_task_runs_a_thin_entry_point_whose_parser_accepts_its_parameters(bundle):
    variables = bundle["main"]["variables"]
    seen = []
    for path, key, job in jobs(bundle):
        for task in job["tasks"]:
            spt = task["spark_python_task"]
            py = (path.parent / spt["python_file"]).resolve()
            assert py.is_file() and py.parent == ROOT / "jobs", f"{key}.{task['task_key']}: {py} not in jobs/"
            stage = check_entry_point(py)
            assert task["task_key"] == stage
            params = [substitute(p, variables) for p in spt["parameters"]]
            args = check_task_parameters(stage, params)
            assert args.ds == DS
            assert (args.catalog, args.schema) == (variables["catalog"]["default"], variables["schema"]["default"])
            # the conf the task names exists in the synced repo and loads with the task's overrides
            cfg = load_config(args.conf, conf_overrides(args))
            assert (cfg.tables.catalog, cfg.tables.schema) == (args.catalog, args.schema)
            assert cfg.tables.models_dir == args.models_dir
            wheels = [lib["whl"] for lib in task.get("libraries", [])]
            assert wheels and all((path.parent / w).resolve() == ROOT / "dist" / "*.whl" for w in wheels), \
                f"{key}.{task['task_key']}: the project's wheel (dist/*.whl) must be a library"
            seen.append(stage)
    assert sorted(seen) == sorted(DAILY + WEEKLY)


def test_depends_on_forms_the_documented_order(bundle):
    orders = {}
    for _, key, job in jobs(bundle):
        tasks = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in job["tasks"]}
        for name, deps in tasks.items():
            assert set(deps) <= set(tasks), f"{key}.{name} depends on a task that does not exist: {deps}"
        # the documented order is a chain: each task depends on exactly the one before it
        first = [n for n, d in tasks.items() if not d]
        assert len(first) == 1, f"{key}: one first task, got {first}"
        order, nxt = first, {d[0]: n for n, d in tasks.items() if d}
        assert all(len(d) <= 1 for d in tasks.values())
        while order[-1] in nxt:
            order.append(nxt[order[-1]])
        assert len(order) == len(tasks), f"{key}: tasks not in one chain: {order} of {sorted(tasks)}"
        orders[key] = order
    assert sorted(orders.values()) == sorted([DAILY, WEEKLY])
    assert all(STAGES.index(a) < STAGES.index(b) for o in orders.values() for a, b in zip(o, o[1:]))


def _cluster(job: dict, task: dict) -> dict:
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job.get("job_clusters", [])}
    return task.get("new_cluster") or clusters[task["job_cluster_key"]]


@pytest.mark.parametrize("stage", ["score", "train"])
def test_scoring_and_training_clusters_request_gpus(bundle, stage):
    variables = bundle["main"]["variables"]
    (job, task), = [(j, t) for _, _, j in jobs(bundle) for t in j["tasks"] if t["task_key"] == stage]
    c = _cluster(job, task)
    assert "gpu" in substitute(c["spark_version"], variables), "a GPU Databricks Runtime (…-gpu-ml-…)"
    if stage == "score":  # executors score: one task per GPU
        assert float(c["spark_conf"]["spark.task.resource.gpu.amount"]) >= 1
        assert int(substitute(str(c["spark_conf"]["spark.task.cpus"]), variables)) >= 1
    else:  # training runs on the driver: a single GPU node
        assert c["num_workers"] == 0 and c["spark_conf"]["spark.databricks.cluster.profile"] == "singleNode"


def test_spark_only_stages_run_on_a_cpu_cluster(bundle):
    variables = bundle["main"]["variables"]
    for _, _, job in jobs(bundle):
        for task in job["tasks"]:
            if task["task_key"] in ("score", "train"):
                continue
            assert "gpu" not in substitute(_cluster(job, task)["spark_version"], variables), task["task_key"]


# ----------------------------------------------------------------------------------------------- the checks can fail
def test_a_misspelled_parameter_is_rejected():
    good = ["--conf", str(ROOT / "conf/databricks.yaml"), "--ds", DS, "--catalog", "main", "--schema", "recsys"]
    assert check_task_parameters("score", good).schema == "recsys"
    for bad in (["--catalgo" if p == "--catalog" else p for p in good],  # typo
                ["--cat" if p == "--catalog" else p for p in good],      # abbreviation: not accepted either
                good[:-1],                                               # --schema without a value
                [p.replace(DS, "{{job.parameters.ds}}") for p in good]):   # an unsubstituted reference
        with pytest.raises(SystemExit):
            check_task_parameters("score", bad)


def test_an_unknown_reference_or_a_fat_entry_point_is_rejected(tmp_path):
    with pytest.raises(AssertionError, match="unexpected bundle reference"):
        substitute("${var_catalog}", {})
    with pytest.raises(KeyError):
        substitute("${var.catalgo}", {"catalog": {"default": "main"}})
    fat = tmp_path / "score.py"
    fat.write_text("import sys\nfrom collm_udf.cli import stage_main\nimport pyspark\nsys.exit(stage_main('score'))\n")
    with pytest.raises(AssertionError, match="imports"):
        check_entry_point(fat)
    wrong = tmp_path / "als.py"
    wrong.write_text("import sys\nfrom collm_udf.cli import stage_main\nsys.exit(stage_main('score'))\n")
    with pytest.raises(AssertionError, match="must call"):
        check_entry_point(wrong)
