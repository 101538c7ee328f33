"""Tests of flowsim.data: loaders, validation messages, file round trips, separability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowsim.data import (
    DATASETS,
    Dataset,
    gaussian_separable,
    is_linearly_separable,
    load_csv,
    load_dataset,
    load_digits_pair,
    load_iris_pair,
    load_npz,
    load_wine_pair,
    make_dataset,
    soudry_2d,
    sparse_teacher_linear,
    student_teacher_relu,
)
from flowsim.errors import InvalidDataError, InvalidParameterError

BUILTIN = ["digits", "iris", "wine", "student_teacher", "sparse_teacher", "gaussian", "soudry_2d"]


def _check_dataset(ds: Dataset) -> None:
    assert isinstance(ds, Dataset)
    assert ds.X.dtype == torch.float64 and ds.y.dtype == torch.float64
    assert ds.X.ndim == 2 and ds.y.shape == (ds.n,) and ds.X.shape == (ds.n, ds.d)
    assert set(ds.y.unique().tolist()) == {-1.0, 1.0}
    assert torch.isfinite(ds.X).all()
    assert torch.equal(ds.Z, ds.y[:, None] * ds.X)
    json.dumps(ds.info)  # provenance must be JSON-able


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_loaders_shapes_labels_separable(name):
    ds = load_dataset(name)
    _check_dataset(ds)
    assert is_linearly_separable(ds)


def test_registry_names():
    assert set(BUILTIN) | {"csv", "npz"} == set(DATASETS)


def test_digits_pair_scaling_and_separability():
    ds = load_digits_pair(0, 1)
    assert ds.name == "digits_0v1"
    assert (ds.n, ds.d) == (360, 64)
    assert ds.X.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-12)
    assert is_linearly_separable(ds)
    # class a is +1: digit 0 has 178 samples in the bundled set, digit 1 has 182
    assert int((ds.y > 0).sum()) == 178
    assert ds.info["classes"] == {"+1": "0", "-1": "1"}
    raw = load_digits_pair(0, 1, normalize=None)
    assert raw.X.max().item() == 16.0


def test_digits_documented_margin():
    from flowsim.analysis.references import svm_l2

    sol = svm_l2(load_digits_pair(0, 1))
    assert sol.margin == pytest.approx(0.12171, abs=5e-5)  # value stated in the docstring / DESIGN ≈ 0.12


def test_iris_and_wine_pairs():
    iris = load_iris_pair()
    assert (iris.n, iris.d) == (100, 4)
    assert iris.info["classes"] == {"+1": "setosa", "-1": "versicolor"}
    assert not is_linearly_separable(load_iris_pair(1, 2))  # versicolor vs virginica overlap
    wine = load_wine_pair()
    assert wine.d == 13 and wine.X.norm(dim=1).max().item() == pytest.approx(1.0)
    unstd = load_wine_pair(standardize=False, normalize=None)
    assert unstd.X.max().item() > 100  # proline in raw units


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: load_digits_pair(0, 0), "two different classes"),
        (lambda: load_digits_pair(0, 10), r"0\.\.9"),
        (lambda: load_iris_pair(0, 1, normalize="l3"), "max_norm"),
    ],
)
def test_pair_loader_bad_parameters(call, match):
    with pytest.raises(InvalidParameterError, match=match):
        call()


def test_student_teacher_labels_match_stored_teacher():
    ds = student_teacher_relu(n=40, d=6, teacher_width=3, seed=3, margin=0.05)
    _check_dataset(ds)
    W = np.array(ds.info["teacher"]["W"])
    a = np.array(ds.info["teacher"]["a"])
    assert W.shape == (3, 6) and set(a.tolist()) == {1.0, -1.0}
    assert ((W != 0).sum(axis=1) == 2).all()  # sparse teacher weights
    X, y = ds.numpy()
    f = np.maximum(X @ W.T, 0.0) @ a
    np.testing.assert_array_equal(np.sign(f), y)
    assert np.abs(f).min() > 0.05 * ds.info["teacher"]["scale"]
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    again = student_teacher_relu(n=40, d=6, teacher_width=3, seed=3, margin=0.05)
    assert torch.equal(again.X, ds.X)
    assert not torch.equal(student_teacher_relu(n=40, d=6, teacher_width=3, seed=4).X, ds.X)


def test_student_teacher_with_cancelling_neurons_is_redrawn():
    """Seeds whose default teacher (width 2, sparsity 2) drew two identical neurons with a = +1, −1 (f* ≡ 0, no
    label defined: 25, 42 and 83 among the first 200) get a redrawn teacher instead of failing; their labels are
    the redrawn teacher's signs and its neurons do not cancel."""
    for seed in (25, 42, 83):
        ds = student_teacher_relu(n=40, d=5, seed=seed)
        W = np.array(ds.info["teacher"]["W"])
        a = np.array(ds.info["teacher"]["a"])
        assert not np.array_equal(W[0], W[1])
        X, y = ds.numpy()
        np.testing.assert_array_equal(np.sign(np.maximum(X @ W.T, 0.0) @ a), y)
        assert set(y.tolist()) == {1.0, -1.0}


def test_student_teacher_bad_parameters():
    with pytest.raises(InvalidParameterError, match="teacher_width"):
        student_teacher_relu(teacher_width=1)
    with pytest.raises(InvalidParameterError, match="lower `margin`"):
        student_teacher_relu(n=10, margin=0.999)


def test_sparse_teacher_and_gaussian():
    ds = sparse_teacher_linear(n=30, d=15, k=4, seed=1, margin=0.1)
    _check_dataset(ds)
    w = np.array(ds.info["teacher"]["w"])
    assert (w != 0).sum() == 4 and np.linalg.norm(w) == pytest.approx(1.0)
    X, y = ds.numpy()
    np.testing.assert_array_equal(np.sign(X @ w), y)
    assert np.abs(X @ w).min() > 0.1
    with pytest.raises(InvalidParameterError, match="k = 5"):
        sparse_teacher_linear(d=4, k=5)

    g = gaussian_separable(n=31, d=3, separation=0.5, seed=2)
    _check_dataset(g)
    u = np.array(g.info["direction"])
    X, y = g.numpy()
    assert (y * (X @ u) > 0).all() and int((y > 0).sum()) == 16
    with pytest.raises(InvalidParameterError, match="separation"):
        gaussian_separable(separation=-1.0)


def test_soudry_2d_is_fixed_and_asymmetric():
    ds = soudry_2d()
    assert (ds.n, ds.d) == (5, 2)
    assert ds.y.tolist() == [1.0, -1.0, 1.0, -1.0, -1.0]
    assert torch.equal(soudry_2d().X, ds.X)
    Z = ds.Z.numpy()
    w = np.array(ds.info["w_svm"])
    np.testing.assert_allclose(Z @ w, [1.0, 1.0, 1.25, 1.75, 1.25])
    np.testing.assert_allclose(Z.T @ np.array(ds.info["alpha"]), w)


# ------------------------------------------------------------------ make_dataset validation


def test_make_dataset_maps_zero_one_labels():
    ds = make_dataset(np.eye(3), [0, 1, 1])
    assert ds.y.tolist() == [-1.0, 1.0, 1.0]
    assert ds.info["label_map"] == {"1": 1, "0": -1}
    flipped = make_dataset(np.eye(3), [0, 1, 1], positive_class=0)
    assert flipped.y.tolist() == [1.0, -1.0, -1.0]
    kept = make_dataset(np.eye(2), [-1, 1])
    assert kept.y.tolist() == [-1.0, 1.0] and "label_map" not in kept.info
    strings = make_dataset(np.eye(3), ["cat", "dog", "cat"], positive_class="cat")
    assert strings.y.tolist() == [1.0, -1.0, 1.0]
    one_class = make_dataset(np.eye(2), [1.0, 1.0])  # ±1 labels of one sign are a valid margin problem
    assert one_class.y.tolist() == [1.0, 1.0]
    assert make_dataset([[2.0, 1.0]], [-1]).y.tolist() == [-1.0]
    from_torch = make_dataset(torch.eye(2, dtype=torch.float32), torch.tensor([3, 8]))
    assert from_torch.X.dtype == torch.float64 and from_torch.y.tolist() == [-1.0, 1.0]


@pytest.mark.parametrize(
    "X, y, fragments",
    [
        (np.ones((3, 2)), [0, 1, 2], ["two classes", "[0, 1, 2]", "select two classes"]),
        (np.ones((3, 2)), [0, 0, 0], ["single class [0]", "cannot be mapped", "as ±1"]),
        (
            np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [np.nan, 1.0], [np.nan, np.nan]]),
            [1, -1, 1, -1, 1],
            ["3 NaN", "0 inf", "2 row(s)", "row 3", "np.isfinite"],
        ),
        (np.array([[0.0, 1.0], [1.0, np.inf], [2.0, -np.inf]]), [1, -1, 1], ["0 NaN", "2 inf", "row 1"]),
        (np.ones((5, 2)), [1, -1, 1, -1], ["n = 5", "len(y) = 4", "one label per row"]),
        (np.ones(4), [1, -1, 1, -1], ["2-D", "(4,)", "reshape(-1, 1)"]),
        (np.ones((2, 2)), [[1], [-1]], ["1-D", "ravel"]),
        (np.ones((0, 2)), [], ["empty"]),
        (np.ones((2, 2)), [1.0, np.nan], ["NaN label", "index 1"]),
        # complex features or labels: casting would drop the imaginary parts (numpy only warns)
        (np.array([[1.0 + 2j, 0.0], [0.0, 1.0]]), [1, -1], ["X is complex", "real data", "X.real", "np.hstack"]),
        (torch.eye(2, dtype=torch.complex128), [1, -1], ["X is complex", "X.real"]),
        (np.eye(2), np.array([1 + 0j, -1 + 0j]), ["y is complex", "y.real"]),
    ],
)
def test_make_dataset_errors_are_informative(X, y, fragments):
    with pytest.raises(InvalidDataError) as info:
        make_dataset(X, y)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_make_dataset_bad_positive_class_and_info():
    with pytest.raises(InvalidDataError, match="positive_class=5"):
        make_dataset(np.eye(2), [0, 1], positive_class=5)
    with pytest.raises(InvalidDataError, match="JSON"):
        make_dataset(np.eye(2), [0, 1], info={"f": object()})
    ds = make_dataset(np.eye(2), [0, 1], info={"seed": np.int64(3), "v": np.arange(2)})
    assert ds.info["seed"] == 3 and ds.info["v"] == [0, 1]


def test_dataset_direct_construction_is_checked():
    with pytest.raises(InvalidDataError, match="make_dataset"):
        Dataset(torch.ones(3, 2, dtype=torch.float64), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(InvalidDataError, match=r"\(n, d\)"):
        Dataset(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))


def test_dataset_to_and_numpy():
    ds = soudry_2d()
    f32 = ds.to(dtype=torch.float32)
    assert f32.X.dtype == torch.float32 and f32.y.dtype == torch.float32 and f32.name == ds.name
    assert ds.X.dtype == torch.float64  # original untouched
    X, y = ds.numpy()
    assert isinstance(X, np.ndarray) and X.shape == (5, 2) and y.shape == (5,)
    assert "soudry_2d" in repr(ds) and "n=5" in repr(ds)


# ------------------------------------------------------------------ files


def test_csv_round_trip_with_header(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 3))
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    path = tmp_path / "data.csv"
    lines = ["a,b,c,label"] + [",".join(f"{v:.17g}" for v in row) + f",{lab}" for row, lab in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    ds = load_csv(path)
    np.testing.assert_array_equal(ds.X.numpy(), X)
    np.testing.assert_array_equal(ds.y.numpy(), np.where(y == 1, 1.0, -1.0))
    assert ds.info["header"] == ["a", "b", "c", "label"] and ds.name == "data"
    assert torch.equal(load_dataset("csv", path=str(path)).X, ds.X)


def test_csv_label_first_no_header_string_labels(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("yes\t1\t2\nno\t3\t4\nyes\t5\t6\n")
    ds = load_csv(path, label_column=0, delimiter="\t")
    assert ds.X.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert ds.y.tolist() == [1.0, -1.0, 1.0]  # "yes" > "no"


def test_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,1\n3,x,-1\n")
    with pytest.raises(InvalidDataError, match=r"line 2, column 1 is not a number \('x'\)"):
        load_csv(bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,1\n3,-1\n")
    with pytest.raises(InvalidDataError, match="line 2 has 2 fields, expected 3"):
        load_csv(ragged)
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2,1\n3,,-1\n")
    with pytest.raises(InvalidDataError, match="1 NaN"):
        load_csv(nan)
    with pytest.raises(InvalidDataError, match="not found"):
        load_csv(tmp_path / "missing.csv")


def test_npz_round_trip_and_missing_key(tmp_path):
    path = tmp_path / "d.npz"
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([1.0, -1.0, -1.0, 1.0])
    np.savez(path, features=X, labels=y)
    ds = load_npz(path, x_key="features", y_key="labels")
    np.testing.assert_array_equal(ds.X.numpy(), X)
    np.testing.assert_array_equal(ds.y.numpy(), y)
    with pytest.raises(InvalidDataError) as info:
        load_npz(path)
    msg = str(info.value)
    assert "['X', 'y']" in msg and "features" in msg and "labels" in msg and "x_key" in msg


def test_load_dataset_errors():
    with pytest.raises(InvalidDataError) as info:
        load_dataset("digitz")
    msg = str(info.value)
    assert "unknown data set 'digitz'" in msg and "'iris'" in msg and "Did you mean 'digits'" in msg
    with pytest.raises(InvalidDataError, match="path="):
        load_dataset("csv")
    with pytest.raises(InvalidParameterError, match="accepts"):
        load_dataset("iris", classes=(0, 1))
    assert load_dataset("Digits", a=3, b=8).name == "digits_3v8"


def test_is_linearly_separable_negative_and_array_input():
    X = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    assert not is_linearly_separable(make_dataset(X, [1, 1, -1, -1]))  # XOR through the origin
    assert is_linearly_separable(np.array([[1.0, 0.0], [0.5, 2.0]]))  # Z given directly


def test_dataset_rejects_conflicting_duplicates_and_inf():
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    with pytest.raises(InvalidDataError, match=r"rows 0 and 2 have the same x"):
        Dataset(X, torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert Dataset(X, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)).n == 3  # same label: fine
    with pytest.raises(InvalidDataError, match=r"non-finite .* row 1"):
        Dataset(
            torch.tensor([[1.0, 0.0], [float("inf"), 1.0]], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        )
