"""Sliding-window prediction speed: ours against MONAI's sliding_window_inference.

    python benchmarks/predict_speed.py [--model MODEL_DIR] [--device cpu|cuda]

Same trained network, same tile (patch) size, same overlap, Gaussian blending, same volume,
in one run; voxels per second and the ratio. MONAI is run with its default sw_batch_size (1)
and with ours. Also: the network's FLOPs per tile, the FLOP/s our prediction achieves, and
that as a fraction of what a plain Conv3d reaches on this machine; the Dice of our labels
against the sample's ground truth at overlap 0.25 and 0.5 (to choose the default).
The model is a U-Net alone (one stage), which is what MONAI's function can run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def conv_flops(model: torch.nn.Module, patch, channels: int, device) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass of one tile, counted from the convs."""
    macs = []

    def hook(module, inputs, output):
        k = int(np.prod(module.kernel_size)) * module.in_channels // module.groups
        if isinstance(module, torch.nn.ConvTranspose3d):
            macs.append(inputs[0].numel() * module.out_channels * int(np.prod(
                module.kernel_size)) // module.groups)
        else:
            macs.append(output.numel() * k)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.inference_mode():
        model(torch.zeros(1, channels, *patch, device=device))
    for h in handles:
        h.remove()
    return 2.0 * sum(macs)


def plain_conv_flops_per_second(device, repeats: int = 5) -> float:
    conv = torch.nn.Conv3d(32, 32, 3, padding=1).to(device).eval()
    x = torch.randn(4, 32, 32, 48, 48, device=device)
    flops = 2.0 * x.numel() * 32 * 27
    with torch.inference_mode():
        conv(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            conv(x)
        _sync(device)
    return flops * repeats / (time.perf_counter() - start)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved model (default: train one)")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tile", type=int, default=2, help="the sample tiled N x N x N")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from monai.inferers import sliding_window_inference

    from napari_voxseg.core import (
        TrainConfig,
        dice_per_class,
        iter_predict,
        load_model,
        normalize,
        run_to_end,
        train,
    )
    from napari_voxseg.core.device import inference_dtype
    from napari_voxseg.core.infer import TileGrid
    from napari_voxseg.core.synthetic import make_sample

    sample = make_sample()
    if args.model:
        model = load_model(args.model)
    else:
        model = train(sample.image, sample.strokes,
                      TrainConfig(iterations=args.iterations, seed=0,
                                          two_stage=False)).model
    device = torch.device(args.device)
    model.to(device).eval()
    image = np.tile(sample.image, (args.tile,) * 3)
    truth = np.tile(sample.ground_truth, (args.tile,) * 3)
    patch = tuple(model.config["patch_size"])
    voxels = image.size
    norm = model.config["normalization"]

    def ours(overlap=args.overlap):
        return run_to_end(iter_predict(model, image, overlap=overlap,
                                       batch_size=args.batch_size, device=device)).labels

    amp = inference_dtype(device, "auto")

    def monai(sw_batch_size, autocast=False):
        def run():
            x = torch.from_numpy(normalize(image[None], norm["low"], norm["high"]))[None]
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32,
                                                        enabled=autocast and amp is not None):
                out = sliding_window_inference(
                    x.to(device), roi_size=patch, sw_batch_size=sw_batch_size,
                    predictor=lambda t: torch.softmax(model(t), dim=1), overlap=args.overlap,
                    mode="gaussian", sigma_scale=0.125, padding_mode="constant")
            return (out[0].float().argmax(0) + 1).to(torch.uint8).cpu().numpy()
        return run

    t_ours, labels = timed(ours, args.repeats)
    t_monai1, monai_labels = timed(monai(1), args.repeats)
    t_monai_b, _ = timed(monai(args.batch_size), args.repeats)
    t_monai_amp, _ = timed(monai(args.batch_size, autocast=True), args.repeats)
    t_ours32, labels32 = timed(lambda: run_to_end(iter_predict(
        model, image, overlap=args.overlap, batch_size=args.batch_size, device=device,
        precision="float32")).labels, args.repeats)
    grid = TileGrid.of(image.shape, patch, model.config["architecture"]["depth"], args.overlap)
    flops = conv_flops(model, grid.patch, model.config["architecture"]["in_channels"], device)
    achieved = flops * grid.count() / t_ours
    plain = plain_conv_flops_per_second(device)
    dice = {}
    for overlap in (0.25, 0.5):
        seconds, lab = timed(lambda o=overlap: ours(o), 1)
        scores = dice_per_class(lab, truth)
        dice[str(overlap)] = {"seconds": round(seconds, 2),
                              "dice": {k: round(v, 4) for k, v in scores.items()}}
    report = {
        "device": str(device), "threads": torch.get_num_threads(),
        "volume": list(image.shape), "patch": list(grid.patch), "overlap": args.overlap,
        "tiles": grid.count(), "batch_size": args.batch_size,
        "ours_mvox_per_s": round(voxels / t_ours / 1e6, 3),
        "monai_sw_batch_1_mvox_per_s": round(voxels / t_monai1 / 1e6, 3),
        f"monai_sw_batch_{args.batch_size}_mvox_per_s": round(voxels / t_monai_b / 1e6, 3),
        "ratio_vs_monai_default": round(t_monai1 / t_ours, 2),
        "ratio_vs_monai_same_batch": round(t_monai_b / t_ours, 2),
        "autocast_dtype": str(amp),
        "monai_same_batch_autocast_mvox_per_s": round(voxels / t_monai_amp / 1e6, 3),
        "ratio_vs_monai_same_batch_autocast": round(t_monai_amp / t_ours, 2),
        "ours_float32_mvox_per_s": round(voxels / t_ours32 / 1e6, 3),
        "ratio_float32_vs_monai_same_batch": round(t_monai_b / t_ours32, 2),
        "labels_agree_with_float32": round(float((labels == labels32).mean()), 5),
        "labels_agree_with_monai": round(float((labels == monai_labels).mean()), 5),
        "gflop_per_tile": round(flops / 1e9, 3),
        "achieved_gflop_per_s": round(achieved / 1e9, 2),
        "plain_conv3d_gflop_per_s": round(plain / 1e9, 2),
        "fraction_of_plain_conv3d": round(achieved / plain, 3),
        "overlap_choice": dice,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
