"""The probing benchmarks by name: which tasks each has and how its annotations are read.

``--dataset lvu|coin|breakfast|synthetic``; ``synthetic`` is the task layout of
``datasets.labelled`` (``tasks.json`` + ``<task>/{train,val,test}.csv``), which also serves any
user dataset written in that layout.
"""
from __future__ import annotations

from pathlib import Path

from datasets import breakfast, coin, lvu
from datasets.labelled import AnnotationError, Annotations, read_task_layout, read_tasks_json

DATASETS = ("lvu", "coin", "breakfast", "synthetic")


def tasks_of(dataset: str, annotations: str | Path | None = None) -> tuple[str, ...]:
    if dataset == "lvu":
        return lvu.TASKS
    if dataset == "coin":
        return coin.TASKS
    if dataset == "breakfast":
        return breakfast.TASKS
    if dataset == "synthetic":
        if annotations is None:
            raise AnnotationError("--dataset synthetic needs --annotations DIR/tasks (tasks.json + task folders)")
        return tuple(read_tasks_json(annotations))
    raise AnnotationError(f"unknown --dataset {dataset!r}; choose from {', '.join(DATASETS)}")


def default_task(dataset: str, annotations=None) -> str:
    tasks = tasks_of(dataset, annotations)
    if len(tasks) != 1:
        raise AnnotationError(f"--dataset {dataset} has several tasks; pass --task (one of {', '.join(tasks)})")
    return tasks[0]


def load_annotations(dataset: str, task: str | None, annotations: str | Path | None = None,
                     split_seed: int = 0, bf_split: str = "official") -> Annotations:
    """The annotations of ``dataset``/``task`` (``task=None``: the dataset's only task)."""
    task = task or default_task(dataset, annotations)
    if dataset == "lvu":
        return lvu.load(annotations, task)
    if dataset == "coin":
        return coin.load(annotations, task, split_seed)
    if dataset == "breakfast":
        return breakfast.load(annotations, task, bf_split, split_seed)
    if dataset == "synthetic":
        if annotations is None:
            raise AnnotationError("--dataset synthetic needs --annotations DIR/tasks (tasks.json + task folders)")
        return read_task_layout(annotations, task, dataset)
    raise AnnotationError(f"unknown --dataset {dataset!r}; choose from {', '.join(DATASETS)}")
