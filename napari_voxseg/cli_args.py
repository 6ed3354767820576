"""The command line's arguments: one parser, its subcommands and their help (the commands
themselves are in :mod:`napari_voxseg.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other bad input."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def build_parser(**commands) -> argparse.ArgumentParser:
    """The parser; ``commands``: the function each subcommand runs (train, predict, ...)."""
    from . import __version__
    from .core import TrainConfig
    from .core.device import DEVICES, PRECISIONS
    from .core.infer import DEFAULT_OVERLAP
    from .core.losses import losses_for
    from .core.paths import READ_SUFFIXES, WRITE_SUFFIXES
    from .core.tasks import DEFAULT_LOSS, TASKS
    from .core.train import FINE_TUNE_LR_FACTOR, NETWORKS

    READS = ", ".join(READ_SUFFIXES + (".zarr",))  # every format the readers take  # noqa: N806
    WRITES = ", ".join(WRITE_SUFFIXES)  # noqa: N806

    # The console script says 'voxseg' in its usage, python -m its own command.
    script = Path(sys.argv[0]).name.startswith("voxseg")
    parser = _Parser(prog="voxseg" if script else "python -m napari_voxseg",
                     description="Train, apply and score 3D segmentation networks from strokes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # -q / -v before or after the command: `voxseg -q predict ...` or `voxseg predict -q ...`
    for where in (parser, chatter := argparse.ArgumentParser(add_help=False)):
        default = 0 if where is parser else argparse.SUPPRESS  # a command's flags add to it
        where.add_argument("-q", "--quiet", action="count", default=default,
                           help="say only warnings and errors (no progress bar)")
        where.add_argument("-v", "--verbose", action="count", default=default,
                           help="say more: the settings and the device in use")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    names = sorted({n for t in TASKS for n in losses_for(t)})
    p = sub.add_parser("train", parents=[chatter],
                       help="train a network on an image and its strokes")
    p.add_argument("image", nargs="?", help=f"volume ({READS})")
    p.add_argument("labels", nargs="*",
                   help="multiclass: strokes, 0 = not annotated, 1..K = classes; multilabel: one "
                        "file per class (or one (K,Z,Y,X) file), 0 = not annotated, 1 = absent, "
                        f"2 = present; regression: the float target ({READS})")
    p.add_argument("--pair", nargs=2, action="append", metavar=("IMAGE", "LABELS"),
                   help="train on several volumes: an image and its strokes, repeated; each "
                        "pair may have its own shape and voxel size (resampled to the first "
                        "pair's), all the same channels")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="train on every DIR/images/NAME with its strokes DIR/labels/NAME "
                        f"(the same names; {READS})")
    p.add_argument("--out", required=True,
                   help="model folder to write: a new name or an empty folder (an earlier "
                        "voxseg model only with --overwrite; any other folder is refused)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier model folder that voxseg wrote")
    p.add_argument("--task", default=None, choices=TASKS,
                   help="default multiclass (with --init: the model's task)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune this saved model on the strokes instead of training a new "
                        "one (default learning rate then "
                        f"{TrainConfig.learning_rate * FINE_TUNE_LR_FACTOR:g})")
    p.add_argument("--loss", default=None, choices=names, metavar="LOSS",
                   help="; ".join(f"{t}: {', '.join(losses_for(t))} (default {DEFAULT_LOSS[t]})"
                                  for t in TASKS))
    p.add_argument("--class-weights", default="none",
                   help="none | auto (inverse stroke frequency; multilabel: absent/present) | "
                        "median (median-frequency balancing) | w1,w2,... (one per class)")
    p.add_argument("--focal-gamma", type=float, default=TrainConfig.focal_gamma,
                   help="focal loss: how much easy voxels are down-weighted (0 = cross-entropy)")
    p.add_argument("--boundary-weight", type=float, default=TrainConfig.boundary_weight,
                   help="boundary_ce: extra weight at a class boundary (w0)")
    p.add_argument("--boundary-sigma", type=float, default=TrainConfig.boundary_sigma,
                   help="boundary_ce: fall-off of the extra weight, in voxels")
    p.add_argument("--boundary-from", default=None, metavar="LABELS",
                   help="boundary_ce: find boundaries in these labels (e.g. a prediction) "
                        f"instead of the strokes ({READS})")
    p.add_argument("--mask", default=None,
                   help=f"regression: where the target is known (nonzero; {READS}); default "
                        "everywhere")
    p.add_argument("--classes", type=int, default=None,
                   help="class count K (default: the largest class painted)")
    p.add_argument("--class-names", default=None,
                   help="name1,name2,... (multilabel default: the label files' names)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"training steps (default {TrainConfig.iterations})")
    p.add_argument("--network", default="auto", choices=NETWORKS,
                   help="auto: a 2D U-Net applied slice by slice for stacks with fewer slices "
                        "than a 3D patch, else a 3D U-Net whose pooling follows the voxel size; "
                        "or 3d / 2d")
    stages = p.add_mutually_exclusive_group()
    stages.add_argument("--two-stage", dest="two_stage", action="store_true", default=None,
                        help="fit a per-voxel classifier (stage 1) on the strokes first and give "
                             "the U-Net its probabilities as inputs and its confident voxels as "
                             "pseudo-labels; the U-Net is kept only where it beats stage 1 on "
                             "held-out strokes (default for multiclass with loss ce or "
                             "boundary_ce, and multilabel with bce)")
    stages.add_argument("--one-stage", dest="two_stage", action="store_false",
                        help="the U-Net alone, trained on the strokes")
    p.add_argument("--patch-size", default=None,
                   help="Z,Y,X (default: 32,48,48 for isotropic voxels, flatter and wider for "
                        "anisotropic ones, 1,48,48 for 2D)")
    p.add_argument("--batch-size", type=int, default=None, help="default 2 (3D) or 8 (2D)")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="the image's channel axis, for 4D files that do not say (e.g. 3 for "
                        "a .npy saved as Z,Y,X,C); .tif/OME-TIFF/OME-Zarr channels are found")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: float16 on CUDA, bfloat16 on CPUs with AMX/AVX512-BF16, else "
                        "float32")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--voxel-size", default=None, help="Z,Y,X (default: from the image file)")
    p.set_defaults(func=commands["train"])

    p = sub.add_parser("predict", parents=[chatter],
                       help="label volumes with a saved model: one image (--out FILE) or many "
                            "(--out-dir DIR)")
    p.add_argument("model", help="model folder")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help=f"volumes ({READS})")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="predict every volume in DIR/images (or in DIR when it has no "
                        "images/ folder)")
    p.add_argument("--out", default=None,
                   help=f"labels file to write (1..K), for one image ({WRITES})")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="folder for the predictions of several images, named as the images; "
                        "images whose prediction is there already are skipped (see "
                        "--overwrite), and a file that fails is reported, the rest go on "
                        "(exit 1)")
    p.add_argument("--out-format", default=None, metavar="SUFFIX",
                   help=f"with --out-dir: {WRITES} (default: each image's "
                        "own)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never an input; a .zarr folder only "
                        "if voxseg wrote it); with --out-dir, predict images again whose "
                        "prediction exists")
    p.add_argument("--probabilities", default=None,
                   help=f"also write (K, Z, Y, X) probabilities to this file ({WRITES})")
    p.add_argument("--uncertainty", default=None,
                   help="also write (Z, Y, X) uncertainty: the entropy of the probabilities, "
                        f"0 (sure) to 1 ({WRITES})")
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                   help="how much neighbouring tiles overlap, 0 to <1 (default "
                        f"{DEFAULT_OVERLAP:g})")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: float16 on CUDA, bfloat16 on CPUs with AMX/AVX512-BF16, else "
                        "float32")
    p.add_argument("--block", default=None,
                   help="Z,Y,X block size for block-wise prediction (.zarr in or out; default "
                        "about 16M voxels)")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="the image's channel axis, for 4D files that do not say")
    p.add_argument("--instances", default=None, metavar="CLASS[,CLASS]",
                   help="also write the objects of these classes (numbers or names) as "
                        "instance labels, to <out>-objects<suffix>: connected components, "
                        "touching round objects split by a seeded watershed on the distance "
                        "transform; block by block for .zarr")
    p.add_argument("--time-axis", type=int, default=None, metavar="N",
                   help="the image is a time series with time on axis N (for files that do "
                        "not say; OME-TIFF, ImageJ TIFF and 4D NIfTI series are found): each "
                        "frame is predicted and the results keep the time axis first")
    p.add_argument("--voxel-size", default=None, help="Z,Y,X (default: from the image file)")
    p.add_argument("--resample", action="store_true",
                   help="when the image's voxel size differs from the model's, predict at the "
                        "model's voxel size and resample the results back")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the blocks on a dask.distributed cluster (tcp://host:8786)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(func=commands["predict"])

    p = sub.add_parser("evaluate", parents=[chatter],
                       help="Dice, IoU, precision, recall, HD95 and ASSD per class against a "
                            "ground truth (for regression: mean absolute and RMS error)")
    p.add_argument("prediction", help=f"labels (or, for regression, values): {READS}")
    p.add_argument("ground_truth", help=f"the same kind of volume: {READS}")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--instances", action="store_true",
                   help="the two volumes are instance labels (each object its own id): "
                        "object-level precision, recall and F1 at IoU 0.5")
    p.add_argument("--no-surface", action="store_true",
                   help="leave out the surface distances (HD95, ASSD), the slow part on large "
                        "volumes")
    p.add_argument("--mask", default=None,
                   help=f"regression: compare only where nonzero ({READS})")
    p.set_defaults(func=commands["evaluate"])

    p = sub.add_parser("suggest", parents=[chatter],
                       help="where to paint next: the slices where new strokes would teach "
                            "the model most (uncertain, where its two stages disagree, far "
                            "from painted slices)")
    p.add_argument("model", help="model folder")
    p.add_argument("image", help=f"the volume being annotated ({READS})")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABELS",
                   help="the strokes painted so far (multi-label: one volume per class), so "
                        f"that painted slices and their neighbours rank low ({READS})")
    p.add_argument("--top", type=int, default=5, help="how many slices to name (default 5)")
    p.add_argument("--axis", default="z", choices=("z", "y", "x"),
                   help="the axis the slices are taken along (default z)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="the image's channel axis, for 4D files that do not say")
    p.add_argument("--voxel-size", default=None, help="Z,Y,X (default: from the image file)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(func=commands["suggest"])

    from .core.export import FORMATS, SUFFIXES

    p = sub.add_parser("export", parents=[chatter],
                       help="write a saved model for other frameworks: TorchScript or ONNX "
                            "(with a JSON of how to use it) or a bioimage.io package")
    p.add_argument("model", help="the model folder that train --out or Save model wrote")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True,
                   help="the file to write: " + ", ".join(
                       f"{f} {s}" for f, s in SUFFIXES.items()) +
                        " (TorchScript and ONNX also write <out>.json beside it)")
    p.add_argument("--image", default=None,
                   help="bioimageio: a volume to cut the package's test input and cover from "
                        f"(default: voxseg's sample): {READS}")
    p.add_argument("--author", default=None,
                   help="bioimageio: the package's author (default: your user name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file (and its .json) if it exists")
    p.set_defaults(func=commands["export"])

    p = sub.add_parser("demo", parents=[chatter],
                       help="open napari with the sample and the widget (headless: train, "
                            "predict, write the prediction and a screenshot)")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--out", default="voxseg-demo", help="folder for the headless outputs")
    p.add_argument("--iterations", type=int, default=None)
    p.set_defaults(func=commands["demo"])
    return parser
