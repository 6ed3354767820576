"""``voxseg export MODEL --format torchscript|onnx|bioimageio --out PATH``: a saved model for
other frameworks (see :mod:`napari_voxseg.core.export`)."""

from __future__ import annotations

from .cli_common import _read_image, log


def cmd_export(args) -> int:
    from .core.checkpoint import load_model
    from .core.export import check_export, export_model

    inputs = [args.model, args.image]
    # the names first: a bad --out is refused before anything is read
    check_export(args.out, args.format, inputs=inputs, overwrite=args.overwrite)
    model = load_model(args.model)
    image = (_read_image(args.image, None)[0] if args.image and args.format == "bioimageio"
             else None)
    paths = export_model(model, args.out, args.format, overwrite=args.overwrite, inputs=inputs,
                         image=image, author=args.author)
    log.info("wrote " + " and ".join(str(p) for p in paths))
    return 0
