"""Build lm-evaluation-harness's own task objects on local data, for parity tests.

lm-eval loads a task's dataset from the hub; here the same YAML is kept and only the data source
is swapped for the local mirror's JSONL files (``<dir>/<dataset_path>/<config>/<split>.jsonl``), so
lm-eval renders exactly what it would render on the hub data. Splits the mirror lacks are dropped.
The demo task's lm-eval YAML lives in ``tasks/demo/lm_eval``; its relative ``data_files`` are
resolved against the checkout, because lm-eval would resolve them against the working directory.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from salad_eval.home import project_root

DEMO_TASKS = project_root() / "tasks" / "demo" / "lm_eval"


@functools.cache
def _manager() -> TaskManager:
    return TaskManager(include_path=str(DEMO_TASKS))


def lm_eval_task(name: str, benchmarks_dir: Path | str) -> ConfigurableTask:
    """lm-eval's task ``name`` (``arc_easy``, ``mmlu_anatomy``, ``salad_demo``...) on local data."""
    entry = _manager().task_index[name]
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    if cfg["dataset_path"] == "json":  # a task over local files already
        files = cfg["dataset_kwargs"]["data_files"]
        cfg["dataset_kwargs"] = {
            "data_files": {split: str(project_root() / path) for split, path in files.items()}
        }
    else:
        local = Path(benchmarks_dir) / cfg["dataset_path"] / (cfg.get("dataset_name") or "default")
        files = {path.stem: str(path.resolve()) for path in sorted(local.glob("*.jsonl"))}
        assert files, f"no local data for {name} under {local}"
        cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
        for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
            if cfg.get(key) not in files:  # a split the mirror lacks (HellaSwag's train)
                cfg[key] = None
    return ConfigurableTask(config=cfg)
