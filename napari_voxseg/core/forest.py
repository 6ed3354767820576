"""A random forest stored as plain arrays, predicted in torch (CPU or GPU): no pickle, no sklearn
to load or predict.

    forest = fit_forest(x, y, num_classes=3)       # x (N, F) float32 stroke voxels, y 1..K
    state = forest.state_dict()                    # {name: tensor}, for safetensors
    forest = Forest.from_state(state)
    probs = forest.predict_proba(x)                # (N, K), equal to sklearn's predict_proba

Fitting uses scikit-learn's ``RandomForestClassifier`` (imported inside :func:`fit_forest`, so
only fitting needs scikit-learn installed). The fitted trees are exported to arrays of shape
(n_trees, max_nodes), padded: per node the feature it splits on, its threshold, its left and
right children (indices within the tree) and, in ``value`` (n_trees, max_nodes, K), the class
probabilities of the node. A leaf (and a padding node) is its own child, so a traversal of a
fixed number of steps (the forest's depth), all voxels and trees at once, ends on the leaf of
every voxel in every tree.

Thresholds are stored in float32, rounded down: sklearn compares float32 features with float64
thresholds (``x <= t``), and for a float32 ``x`` that is the same as ``x <= t32`` where ``t32``
is the largest float32 not above ``t``. So every voxel reaches the leaves it reaches in sklearn,
and the probabilities equal sklearn's ``predict_proba`` to float32 rounding (tested to 1e-6).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VoxSegError

KEYS = ("feature", "threshold", "left", "right", "value")
# Voxels per traversal chunk: the working set is chunk x trees node indices (3 MB at 100 trees
# on a CPU, where it stays in cache; more on a GPU, for fewer kernel launches).
_CHUNK = {"cpu": 1 << 13, "cuda": 1 << 16}


@dataclass(frozen=True)
class ForestConfig:
    """ilastik-like: 100 fully grown trees on bootstrap samples, sqrt(F) features per split."""

    trees: int = 100
    max_depth: int | None = None
    min_samples_leaf: int = 1
    max_features: str | float = "sqrt"
    # Stroke voxels per class kept for fitting (a random subset above it), for speed.
    max_per_class: int = 10_000
    n_jobs: int | None = None  # None: the available cores
    seed: int = 0


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def subsample(y: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``y`` keeping at most ``cap`` random entries of each value."""
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(y):
        where = np.flatnonzero(y == value)
        keep.append(where if len(where) <= cap else rng.choice(where, cap, replace=False))
    return np.sort(np.concatenate(keep))


@dataclass(eq=False)
class Forest:
    """A fitted forest as arrays (see the module's docstring)."""

    feature: torch.Tensor  # (T, M) int32
    threshold: torch.Tensor  # (T, M) float32
    left: torch.Tensor  # (T, M) int32
    right: torch.Tensor  # (T, M) int32
    value: torch.Tensor  # (T, M, K) float32, class probabilities per node
    depths: torch.Tensor = field(init=False, repr=False)  # (T,) longest path of each tree
    _tables: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self):
        self.depths = _tree_depths(self.left, self.right)

    @property
    def depth(self) -> int:
        """Steps from the roots to the deepest leaf."""
        return int(self.depths.max()) if len(self.depths) else 0

    @property
    def num_classes(self) -> int:
        return int(self.value.shape[2])

    @property
    def num_features(self) -> int:
        return int(self.feature.max()) + 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key).contiguous() for key in KEYS}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Forest:
        """Rebuild from :meth:`state_dict`, checking the arrays (depths are recomputed)."""
        missing = [key for key in KEYS if key not in state]
        if missing:
            raise VoxSegError(f"the forest lacks the arrays {missing}; the model file is "
                              "incomplete, save it again")
        feature, threshold, left, right, value = (state[key].cpu() for key in KEYS)
        shape = tuple(feature.shape)
        if (len(shape) != 2 or 0 in shape
                or any(tuple(t.shape) != shape for t in (threshold, left, right))
                or value.ndim != 3 or tuple(value.shape[:2]) != shape):
            raise VoxSegError("the forest's arrays have inconsistent shapes; the model file is "
                              "damaged, save it again")
        children = torch.cat([left.reshape(-1), right.reshape(-1)])
        if children.min() < 0 or children.max() >= shape[1] or feature.min() < 0:
            raise VoxSegError("the forest's arrays point outside the trees; the model file is "
                              "damaged, save it again")
        return cls(feature.to(torch.int32), threshold.to(torch.float32), left.to(torch.int32),
                   right.to(torch.int32), value.to(torch.float32))

    def predict_proba(self, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Class probabilities (N, K) float32 of features ``x`` (N, F), on ``x``'s device:
        the mean over trees of the class fractions of the leaf each voxel reaches."""
        if x.ndim != 2 or x.shape[1] < self.num_features:
            raise VoxSegError(f"the forest needs at least {self.num_features} features per "
                              f"voxel, got an array of shape {tuple(x.shape)}")
        if x.device not in self._tables:
            self._tables[x.device] = self._make_tables(x.device)
        tables = self._tables[x.device]
        out = torch.empty((x.shape[0], self.num_classes), dtype=torch.float32, device=x.device)
        chunk = chunk or _CHUNK.get(x.device.type, _CHUNK["cpu"])
        for start in range(0, x.shape[0], chunk):
            out[start:start + chunk] = _traverse(x[start:start + chunk].float(), *tables)
        return out

    def _make_tables(self, device: torch.device) -> tuple:
        """The trees, deepest first, as flat tables indexed by ``2 * (tree * M + node) +
        side``: the roots, the feature, the threshold, the child on that side (indexed the
        same way) and the class probabilities; and, per step down, how many trees (the
        first ones) still have inner nodes at that depth."""
        trees, nodes = self.feature.shape
        order = torch.argsort(self.depths, descending=True, stable=True)
        offset = torch.arange(trees, dtype=torch.int64)[:, None] * nodes
        left, right = self.left[order] + offset, self.right[order] + offset
        index = torch.int32 if 2 * trees * nodes < 2**31 else torch.int64

        def flat(t: torch.Tensor, dtype=None) -> torch.Tensor:  # each node twice, one per side
            return t[order].repeat_interleave(2, 1).reshape(2 * trees * nodes, *t.shape[2:]
                                                           ).to(device, dtype)

        active = [int((self.depths > step).sum()) for step in range(self.depth)]
        return ((offset[:, 0] * 2).to(device, index), flat(self.feature, torch.int64),
                flat(self.threshold), torch.stack([left, right], -1).reshape(-1).mul(2)
                .to(device, index), flat(self.value), active)


def _tree_depths(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The longest root-to-leaf path (edges) of each tree, following them level by level."""
    trees, nodes = left.shape
    own = torch.arange(nodes)
    left, right = left.to(torch.int64), right.to(torch.int64)
    inner = (left != own) | (right != own)
    rows = torch.arange(trees)[:, None].expand(trees, nodes)
    depths = torch.zeros(trees, dtype=torch.int64)
    level = torch.zeros((trees, nodes), dtype=torch.bool)
    level[:, 0] = True
    for depth in range(nodes + 1):
        active = level & inner
        if not active.any():
            return depths
        depths[active.any(1)] = depth + 1
        level = torch.zeros_like(level)
        level[rows[active], left[active]] = True
        level[rows[active], right[active]] = True
    raise VoxSegError("the forest's trees hold a cycle; the model file is damaged, save it again")


def _traverse(x, roots, feature, threshold, children, value, active) -> torch.Tensor:
    """Probabilities (N, K) of voxels ``x`` (N, F) float32, walking all trees at once: one
    step down per entry of ``active`` (a leaf is its own child), then the mean of the leaves'
    class probabilities.

    Tree-major (T, N): neighbouring entries walk the same tree, whose nodes stay in cache;
    trees are sorted deepest first, so a step moves only the first ``active[step]`` rows."""
    # NaN to +inf: it then goes right, as in sklearn (``x <= t`` is false for NaN).
    xt = torch.nan_to_num(x.t(), nan=float("inf")).contiguous()  # (F, N)
    n = len(x)
    node = roots[:, None].expand(len(roots), n).reshape(-1)  # side 0 of each root
    for trees in active:
        head = node[:trees * n]
        values = xt.gather(0, feature.index_select(0, head).view(trees, n)).view(-1)
        step = children.index_select(0, head + (values > threshold.index_select(0, head)))
        node = step if trees == len(roots) else torch.cat([step, node[trees * n:]])
    return F.embedding_bag(node.view(len(roots), n).t(), value, mode="mean")


def fit_forest(x, y, *, num_classes: int | None = None,
               config: ForestConfig = ForestConfig()) -> Forest:
    """Fit scikit-learn's random forest on voxels ``x`` (N, F) with classes ``y`` (N,) in
    1..K (a tensor or array; at most ``config.max_per_class`` random voxels of each class are
    used) and export it to arrays. Needs scikit-learn (a dependency for fitting only)."""
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as error:
        raise VoxSegError("fitting the stage-1 forest needs scikit-learn; install it with "
                          "'pip install scikit-learn'") from error
    x = (x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor)
         else np.asarray(x, dtype=np.float32))
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise VoxSegError(f"the forest needs features (N, F) and N classes, got shapes "
                          f"{x.shape} and {y.shape}")
    present = np.unique(y)
    if len(present) < 2:
        raise VoxSegError("the strokes hold fewer than two classes; paint at least two classes "
                          "before training")
    k = int(num_classes or present.max())
    if present.min() < 1 or present.max() > k:
        raise VoxSegError(f"stroke classes must lie in 1..{k}, got {present.min()}.."
                          f"{present.max()}")
    keep = subsample(y, config.max_per_class, config.seed)
    model = RandomForestClassifier(
        n_estimators=config.trees, max_depth=config.max_depth,
        min_samples_leaf=config.min_samples_leaf, max_features=config.max_features,
        n_jobs=config.n_jobs or available_cores(), random_state=config.seed)
    model.fit(x[keep], y[keep])
    return export_forest(model, k)


def export_forest(model, num_classes: int | None = None) -> Forest:
    """The arrays of a fitted ``RandomForestClassifier`` (classes are integers 1..K; column
    ``c - 1`` of the probabilities is class ``c``, classes it never saw get 0)."""
    classes = np.asarray(model.classes_).astype(np.int64)
    k = int(num_classes or classes.max())
    trees = [estimator.tree_ for estimator in model.estimators_]
    nodes = max(tree.node_count for tree in trees)
    shape = (len(trees), nodes)
    own = np.broadcast_to(np.arange(nodes, dtype=np.int32), shape)
    feature, left, right = np.zeros(shape, np.int32), own.copy(), own.copy()
    threshold = np.full(shape, np.inf, np.float32)
    value = np.zeros((*shape, k), np.float32)
    for i, tree in enumerate(trees):
        n = tree.node_count
        inner = tree.children_left != -1  # sklearn's TREE_LEAF
        left[i, :n][inner] = tree.children_left[inner]
        right[i, :n][inner] = tree.children_right[inner]
        feature[i, :n][inner] = tree.feature[inner]
        t = tree.threshold[inner]
        t32 = t.astype(np.float32)
        above = t32.astype(np.float64) > t
        t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
        threshold[i, :n][inner] = t32
        counts = tree.value[:, 0, :].astype(np.float64)  # counts or fractions, by version
        value[i, :n][:, classes - 1] = counts / counts.sum(1, keepdims=True)
    return Forest(*(torch.from_numpy(a) for a in (feature, threshold, left, right, value)))
