"""TorchScript and ONNX exports of a voxseg network: export time, file size, largest difference
from torch's output and time per patch in torch.jit / onnxruntime, for ONNX opsets 18 to 21
(how voxseg's opset was chosen).

    python benchmarks/export_formats.py [--iterations 30] [--repeats 5] [--opsets 18,19,20,21]

The network is trained briefly on the sample (one stage, the default architecture); the patch
is its training patch, batch 1. Prints one JSON line per format and opset.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_voxseg.core import TrainConfig
from napari_voxseg.core.export import example_input, reference_output
from napari_voxseg.core.export_net import network_of, save_torchscript, to_onnx, to_torchscript
from napari_voxseg.core.models import divisors
from napari_voxseg.core.synthetic import make_sample
from napari_voxseg.core.train import train


def timed(run, repeats: int) -> float:
    run()  # warm up
    began = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - began) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--opsets", default="18,19,20,21")
    args = parser.parse_args()
    import onnxruntime as ort

    sample = make_sample()
    model = train(sample.image, sample.strokes,
                  TrainConfig(iterations=args.iterations, two_stage=False)).model
    net = network_of(model)
    x = example_input(model, seed=1)
    expected = reference_output(model, x)
    print(json.dumps({"patch": list(x.shape), "torch_seconds": round(timed(
        lambda: net(x), args.repeats), 4)}))
    folder = Path(tempfile.mkdtemp())
    began = time.perf_counter()
    path = folder / "net.pt"
    save_torchscript(to_torchscript(net, example_input(model)), path)
    seconds = time.perf_counter() - began
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        diff = float(np.abs(scripted(x).numpy() - expected).max())
        run = timed(lambda: scripted(x), args.repeats)
    print(json.dumps({"format": "torchscript", "export_seconds": round(seconds, 2),
                      "mb": round(path.stat().st_size / 2**20, 2), "max_diff": diff,
                      "seconds_per_patch": round(run, 4)}))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    for opset in (int(v) for v in args.opsets.split(",")):
        path = folder / f"net{opset}.onnx"
        began = time.perf_counter()
        try:
            to_onnx(net, example_input(model), path, divisors(model.config["architecture"]),
                    opset=opset)
        except Exception as exc:  # an opset this torch cannot write
            print(json.dumps({"format": "onnx", "opset": opset, "error": str(exc)[:200]}))
            continue
        seconds = time.perf_counter() - began
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out = session.run(None, {"input": x.numpy()})[0]
        run = timed(lambda s=session: s.run(None, {"input": x.numpy()}), args.repeats)
        print(json.dumps({"format": "onnx", "opset": opset, "export_seconds": round(seconds, 2),
                          "mb": round(path.stat().st_size / 2**20, 2),
                          "max_diff": float(np.abs(out - expected).max()),
                          "seconds_per_patch": round(run, 4)}))


if __name__ == "__main__":
    main()
