"""The engine: numpy and torch only, never napari or Qt.

    from napari_voxseg.core import load_model, predict
    model = load_model("model_dir")    # torch.nn.Module with model.config
    labels = predict(model, image)     # (Z, Y, X) or (C, Z, Y, X) in, labels 1..K out
"""

from .checkpoint import load_model, save_model
from .data import check_image, check_labels, class_weights, normalize
from .device import resolve_device
from .errors import VoxSegError
from .files import read_volume, write_volume
from .infer import PredictEvent, PredictResult, iter_predict, predict
from .metrics import dice_per_class, iou_per_class
from .models import build_model
from .train import TrainConfig, TrainEvent, TrainResult, iter_train, run_to_end, train

__all__ = [
    "PredictEvent", "PredictResult", "TrainConfig", "TrainEvent", "TrainResult", "VoxSegError",
    "build_model", "check_image", "check_labels", "class_weights", "dice_per_class",
    "iou_per_class", "iter_predict", "iter_train", "load_model", "normalize", "predict",
    "read_volume", "resolve_device", "run_to_end", "save_model", "train", "write_volume",
]
