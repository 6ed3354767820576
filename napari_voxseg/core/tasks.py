"""The task vocabulary: what each task predicts, from what, and what it allows.

Every other module asks this one instead of comparing the task string itself:

==============  ================================  ==========  ==================================
task            annotations                       activation  prediction
==============  ================================  ==========  ==================================
multiclass      one volume, 0 = not annotated,    softmax     labels 1..K, one Labels layer
                1..K = classes
multilabel      one volume per class, 0 = not     sigmoid     per class 1 absent / 2 present,
                annotated, 1 = absent, 2 = present            one Labels layer per class
regression      a float target (NaN = unknown)    none        float values, an Image layer
                and an optional mask of where
                it is known
==============  ================================  ==========  ==================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import VoxSegError


@dataclass(frozen=True)
class Task:
    name: str
    default_loss: str
    activation: str  # softmax | sigmoid | none
    min_outputs: int  # the fewest network outputs a model of this task may have
    has_classes: bool  # class weights, probabilities and uncertainty mean something
    takes_mask: bool  # a mask of where the target is known (else 0 = not annotated)
    label_files: str  # how many annotation volumes: "one" or "one per class"
    output: str  # what a prediction holds: labels | per-class labels | values

    @property
    def single_output(self) -> bool:
        """Whether the network has exactly one output whatever the data (regression)."""
        return not self.has_classes


TASK_INFO: dict[str, Task] = {
    "multiclass": Task("multiclass", "ce", "softmax", 2, True, False, "one", "labels"),
    "multilabel": Task("multilabel", "bce", "sigmoid", 1, True, False, "one per class",
                       "per-class labels"),
    "regression": Task("regression", "mse", "none", 1, False, True, "one", "values"),
}
TASKS = tuple(TASK_INFO)
DEFAULT_TASK = "multiclass"
DEFAULT_LOSS = {name: t.default_loss for name, t in TASK_INFO.items()}


def check_task(task: str) -> str:
    """``task`` if voxseg knows it, else :class:`VoxSegError` listing the tasks."""
    if task not in TASK_INFO:
        raise VoxSegError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def task_info(task: str) -> Task:
    return TASK_INFO[check_task(task)]


def task_of(config: dict) -> str:
    """The task of a saved model's config (models saved before tasks existed: multiclass)."""
    return config.get("task", DEFAULT_TASK)


def check_extra_outputs(task: str, probabilities, uncertainty) -> None:
    """Probabilities and uncertainty exist only where the task has classes."""
    if (probabilities or uncertainty) and not task_info(task).has_classes:
        raise VoxSegError(f"a {task} model predicts values, not probabilities or "
                          "uncertainty; leave those outputs out")
