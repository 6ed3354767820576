"""Judging the network against stage 1 in a two-stage training run with held-out strokes
(:mod:`.validation`): :func:`judge` scores the network every :func:`validation_every` steps
and keeps its weights when it is the best so far and beats stage 1; :func:`network_chosen`
says whether it has."""

from __future__ import annotations

import numpy as np

from .events import ValidationEvent
from .infer import iter_blend, run_to_end
from .models import divisors
from .validation import boxes, score_probabilities


def validation_every(iterations: int) -> int:
    # Every sixth of the run, at least 25 and at most 50 steps apart (each judging predicts
    # the held-out strokes' boxes: a few tiles each).
    return min(50, max(25, iterations // 6))


def judge(run, steps_done: int) -> ValidationEvent:
    """Judge the network against stage 1 on the held-out strokes; keep its weights when it is
    the best so far and beats stage 1."""
    held = run.stage.held_out
    truth, probs = [], []
    for box in boxes(held):
        result = run_to_end(iter_blend(
            run.model, run.normalized, task=run.task, divisor=divisors(run.arch),
            patch_size=run.cfg.patch_size, region=box, batch_size=run.cfg.batch_size,
            probabilities=True, precision=run.cfg.precision))
        part = held[(Ellipsis, *box)]  # multi-label: every class's (K, *box)
        # Flattened, so boxes of any shape join (truth: (N,), multi-label (K, N)).
        truth.append(part.reshape(*part.shape[:-3], -1))
        assert result.probabilities is not None  # asked for, and nothing cancels the blend
        probs.append(result.probabilities.reshape(result.probabilities.shape[0], -1))
    run.model.train()
    network = score_probabilities(np.concatenate(probs, -1), np.concatenate(truth, -1))
    if network[0] > run.stage.score[0] and (run.best_score is None or network > run.best_score):
        run.best_score, run.best_step = network, steps_done
        run.best_loss = run.smoothed if run.smoothed is not None else run.best_loss
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    chosen = network_chosen(run)
    return ValidationEvent(step=steps_done, total=run.cfg.iterations, network=network,
                           stage1=run.stage.score, chosen="U-Net" if chosen else "stage 1",
                           best_step=run.best_step if chosen else 0,
                           held_out=int(np.count_nonzero(held)))


def network_chosen(run) -> bool:
    """Two stages: whether the network has beaten stage 1 on the held-out strokes (never when
    none could be held out: it cannot show that it is better): a
    higher Dice (the painted class's mean probability only ranks the network's own steps; a
    network sharpened by training is more confident, not more right, and a tie keeps stage 1,
    which was the more accurate of the two on the scribble benchmark's ties)."""
    return (run.best_score is not None and run.stage.score is not None
            and run.best_score[0] > run.stage.score[0])
