"""``voxseg evaluate PREDICTION GROUND_TRUTH``: the scores a radiologist or a biologist reports.

Labels: per class Dice, IoU, precision, recall, the 95th-percentile Hausdorff distance (HD95)
and the average symmetric surface distance (ASSD), in the units of the ground truth's voxel size
(else the prediction's, else voxels), with the empty cases named. ``--instances``: object-level
precision, recall and F1 at IoU 0.5 for instance labels. A float ground truth: regression errors.
"""

from __future__ import annotations

import json
import math

from .cli_common import note

SCORE_COLUMNS = ("dice", "iou", "precision", "recall", "hd95", "assd")


def _clean(value):
    """A JSON number, or None for NaN and infinity (the row's ``note`` says why)."""
    return None if isinstance(value, float) and not math.isfinite(value) else \
        round(value, 6) if isinstance(value, float) else value


def _means(report: dict) -> dict:
    means = {}
    for name in SCORE_COLUMNS:
        values = [row[name] for row in report.values() if name in row
                  and math.isfinite(row[name])]
        if values:
            means[name] = sum(values) / len(values)
    return means


def _units(pred_voxel, truth_voxel) -> tuple:
    voxel = truth_voxel or pred_voxel
    if truth_voxel and pred_voxel and any(
            abs(a - b) > 0.01 * max(a, b) for a, b in zip(truth_voxel, pred_voxel)):
        note(f"the prediction's voxel size {tuple(pred_voxel)} differs from the ground "
             f"truth's {tuple(truth_voxel)}; distances use the ground truth's")
    return voxel, ("voxels" if voxel is None else
                   "the voxel size's units (voxel " + " x ".join(f"{v:g}" for v in voxel) + ")")


def cmd_evaluate(args) -> int:
    from .core import read_volume
    from .core.metrics import class_report, object_f1, regression_errors

    pred, pred_voxel = read_volume(args.prediction)
    truth, truth_voxel = read_volume(args.ground_truth)
    if truth.dtype.kind == "f":  # a float target: regression, values rather than labels
        mask = read_volume(args.mask)[0] if args.mask else None
        errors = regression_errors(pred, truth, mask)
        if args.json:
            print(json.dumps(errors))
        else:
            print(f"mean absolute error {errors['mae']:.6g}, root mean square error "
                  f"{errors['rmse']:.6g} over {errors['voxels']} voxels")
        return 0
    if args.instances:
        objects = object_f1(pred, truth)
        if args.json:
            print(json.dumps({"objects": objects, "iou_threshold": 0.5}))
        else:
            print(f"objects at IoU > 0.5: F1 {objects['f1']:.4f}, precision "
                  f"{objects['precision']:.4f}, recall {objects['recall']:.4f} "
                  f"({objects['matched']} matched of {objects['predicted']} predicted and "
                  f"{objects['true']} true)")
        return 0
    voxel, units = _units(pred_voxel, truth_voxel)
    report = class_report(pred, truth, voxel, multilabel=pred.ndim == 4,
                          surface=not args.no_surface)
    means = _means(report)
    if args.json:
        print(json.dumps({
            "classes": {str(c): {k: _clean(v) for k, v in row.items()}
                        for c, row in report.items()},
            "mean": {k: _clean(v) for k, v in means.items()},
            "distance_units": units, "voxel_size": list(voxel) if voxel else None,
            # the short form earlier versions printed
            "dice": {str(c): _clean(row["dice"]) for c, row in report.items()},
            "iou": {str(c): _clean(row["iou"]) for c, row in report.items()},
            "mean_dice": _clean(means.get("dice", math.nan))}))
        return 0
    _print_table(report, means, units)
    return 0


def _print_table(report: dict, means: dict, units: str) -> None:
    columns = [c for c in SCORE_COLUMNS if any(c in row for row in report.values())]
    print(f"{'class':>6} " + " ".join(f"{c:>9}" for c in columns))
    notes = []
    for c, row in report.items():
        print(f"{c:>6} " + " ".join(f"{row[name]:9.4f}" for name in columns))
        if row.get("note"):
            notes.append(f"class {c}: {row['note']}")
    print(f"{'mean':>6} " + " ".join(f"{means.get(name, math.nan):9.4f}" for name in columns))
    if "hd95" in columns:
        print(f"hd95, assd in {units}; the mean leaves out infinite distances")
    for line in notes:
        print(line)
