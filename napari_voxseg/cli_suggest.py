"""``voxseg suggest MODEL IMAGE [--labels LABELS] [--top 5] [--axis z] [--json]``: the slices
where new strokes would teach the model most (see :mod:`napari_voxseg.core.suggest`)."""

from __future__ import annotations

import json

from .cli_common import Progress, _floats, _read_image

AXES = {"z": 0, "y": 1, "x": 2}


def _strokes(paths, shape):
    import numpy as np

    from .core import read_volume
    from .core.errors import VoxSegError

    volumes = [np.asarray(read_volume(p)[0]) for p in paths]
    for path, volume in zip(paths, volumes):
        if volume.shape != tuple(shape):
            raise VoxSegError(f"{path} has shape {volume.shape}, the image {tuple(shape)}; "
                              "give the labels painted on this image")
    return volumes[0] if len(volumes) == 1 else np.stack(volumes)


def cmd_suggest(args) -> int:
    from .core.checkpoint import load_model
    from .core.suggest import suggest

    model = load_model(args.model, device=args.device)
    image, voxel = _read_image(args.image, args.channel_axis)
    if args.voxel_size:
        voxel = _floats(args.voxel_size, 3, "--voxel-size")
    strokes = _strokes(args.labels, image.shape[-3:]) if args.labels else None
    bar = Progress("predicting")
    result = suggest(model, image, strokes, axis=AXES[args.axis], top=args.top,
                     voxel_size=voxel, device=args.device,
                     on_event=lambda e: bar.update(e.done, e.total))
    bar.close()
    assert result is not None  # nothing stops it here
    if args.json:
        print(json.dumps({"axis": args.axis, "painted": result.painted,
                          "suggestions": [s.as_dict() for s in result.suggestions]}))
        return 0
    painted = ", ".join(map(str, result.painted)) or "none"
    if not result.suggestions:
        print(f"no slice to suggest along {args.axis.upper()}: every slice is painted "
              f"({painted}) or the model has no doubt anywhere")
        return 0
    print(f"paint next, along {args.axis.upper()} (slices painted: {painted}):")
    print(f"{'rank':>4}  {'slice':>5}  {'score':>6}  {'uncertainty':>11}  "
          f"{'disagreement':>12}  {'from painted':>12}")
    for rank, s in enumerate(result.suggestions, start=1):
        disagree = "-" if s.disagreement is None else f"{s.disagreement:.3f}"
        near = "-" if s.nearest_painted is None else str(s.nearest_painted)
        print(f"{rank:>4}  {s.slice:>5}  {s.score:>6.3f}  {s.uncertainty:>11.3f}  "
              f"{disagree:>12}  {near:>12}")
    return 0
