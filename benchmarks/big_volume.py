"""Training and prediction at the size people work with, on the GPU or the CPU.

    python benchmarks/big_volume.py [--tiles 4] [--device auto|cpu|cuda] [--iterations 300]
                                    [--seeds 0] [--one-stage] [--threads N] [--stop-after S]

The sample (48x96x96, three classes, its strokes on three slices) tiled ``--tiles`` times
along each axis (4: 192x384x384, 14M voxels; 5: 240x480x480, 55M), so the ground truth is
known. Default training (two stages) from its strokes, then prediction of the whole volume.
One JSON line per seed: the device; stage 1's first overlay (of the three middle slices, as
the widget asks for) and the whole stage 1, in seconds from the start of training; the
U-Net's steps per second; the training and prediction seconds; prediction in million voxels
per second; the peak GPU memory (PyTorch's allocator) and peak RSS; the kept model and the
Dice per class against the ground truth.

With ``--stop-after S``: Stop is pressed S seconds after the first overlay (while stage 1
fits the whole volume, on a large volume); prints how long the run took to end after it.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from napari_voxseg.core import StoppedEarly, TrainConfig, iter_predict, iter_train, run_to_end
from napari_voxseg.core.device import resolve_device
from napari_voxseg.core.events import PreviewEvent, TrainEvent
from napari_voxseg.core.metrics import dice_per_class
from napari_voxseg.core.synthetic import make_sample


def tiled(tiles: int):
    sample = make_sample()
    reps = (tiles,) * 3
    return (np.tile(sample.image, reps), np.tile(sample.strokes, reps),
            np.tile(sample.ground_truth, reps))


def run(image, strokes, truth, seed: int, args) -> dict:
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    config = TrainConfig(seed=seed, iterations=args.iterations, device=str(device),
                         two_stage=False if args.one_stage else None)
    began = time.perf_counter()
    first = stage1 = steps_began = None
    middle = image.shape[0] // 2
    view = (slice(middle - 1, middle + 2), slice(None), slice(None))  # what napari shows
    generator = iter_train(image, strokes.copy(), config, preview_region=lambda: view,
                           preview_every=1e9)  # stage 1's overlays, as the widget gets them
    result = None
    while result is None:
        try:
            event = next(generator)
        except StopIteration as done:
            result = done.value
            break
        now = time.perf_counter() - began
        if isinstance(event, PreviewEvent) and event.stage == 1:
            first = first if first is not None else now
            stage1 = now
        elif isinstance(event, TrainEvent) and steps_began is None:
            steps_began = now
    trained = time.perf_counter() - began
    steps = result.steps
    start = time.perf_counter()
    labels = run_to_end(iter_predict(result.model, image, device=device)).labels
    if device.type == "cuda":
        torch.cuda.synchronize()
    predicted = time.perf_counter() - start
    dice = dice_per_class(labels, truth)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "shape": list(image.shape), "seed": seed,
        "first_overlay_s": None if first is None else round(first, 2),
        "stage1_s": None if stage1 is None else round(stage1, 2),
        "steps": steps, "train_s": round(trained, 1),
        "steps_per_s": round((steps - 1) / (trained - steps_began), 2)
        if steps_began is not None and steps > 1 else None,
        "predict_s": round(predicted, 2),
        "predict_mvox_per_s": round(image.size / predicted / 1e6, 2),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda" else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "kept": result.model.config["training"].get("validation", {}).get("kept", "-"),
        "dice": {str(c): round(d, 3) for c, d in dice.items()},
    }
    report["mean_dice"] = round(float(np.mean(list(dice.values()))), 3)
    return report


def stop_latency(image, strokes, args) -> dict:
    """Press Stop ``args.stop_after`` seconds after the first overlay; how long until the run
    ends, and how (no model: stopped during stage 1; else the step it stopped at)."""
    asked: list[float] = []
    config = TrainConfig(iterations=args.iterations, device=str(resolve_device(args.device)))
    middle = image.shape[0] // 2
    view = (slice(middle - 1, middle + 2), slice(None), slice(None))

    def should_stop() -> bool:
        return bool(asked) and time.perf_counter() >= asked[0]

    began = time.perf_counter()
    generator = iter_train(image, strokes.copy(), config, should_stop=should_stop,
                           preview_region=lambda: view, preview_every=1e9)
    first, outcome = None, ""
    try:
        for event in generator:
            if isinstance(event, PreviewEvent) and first is None:
                first = time.perf_counter() - began
                asked.append(time.perf_counter() + args.stop_after)
    except StoppedEarly as exc:
        outcome = str(exc).split(";")[0]
    ended = time.perf_counter()
    outcome = outcome or "heard at a training step (stage 1 had ended)"
    return {"shape": list(image.shape), "first_overlay_s": None if first is None else
            round(first, 2), "stop_after_s": args.stop_after,
            "stop_heard_s": round(ended - asked[0], 2) if asked else None, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--one-stage", action="store_true", help="the U-Net alone")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stop-after", type=float, default=None, metavar="S",
                        help="press Stop S seconds after the first overlay; say how long the "
                             "run takes to end")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image, strokes, truth = tiled(args.tiles)
    if args.stop_after is not None:
        print(json.dumps(stop_latency(image, strokes, args)), flush=True)
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        print(json.dumps(run(image, strokes, truth, seed, args)), flush=True)


if __name__ == "__main__":
    main()
