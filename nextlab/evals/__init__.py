"""Tasks as continuations: zero- and few-shot evaluation with discontinuous and continuous metrics."""

from nextlab.evals.run import CONTINUOUS, DISCONTINUOUS, edit_distance, evaluate, evaluate_task, means
from nextlab.evals.tasks import BUILTIN_TASKS, Item, Task, get_task, icl_mapping_task, load_jsonl_task, notes_to, world_task

__all__ = [
    "BUILTIN_TASKS",
    "CONTINUOUS",
    "DISCONTINUOUS",
    "Item",
    "Task",
    "edit_distance",
    "evaluate",
    "evaluate_task",
    "get_task",
    "icl_mapping_task",
    "load_jsonl_task",
    "means",
    "notes_to",
    "world_task",
]
