"""The data layer: image folders, benchmark formats, .mat, arrays, text, and the resolver."""
from __future__ import annotations

import gzip
import json
import io
import pickle
import tarfile
import time
import warnings

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import shared_path
from nolabel.data import describe, items_dataset, load_dataset, registry
from nolabel.data.arrays import array_dataset, encode_labels, load_array
from nolabel.data.benchmarks import load_cifar, load_mnist, load_stl10, read_idx
from nolabel.data.folder import load_image_folder, open_rgb
from nolabel.data.matlab import load_mat, unflatten
from nolabel.data.text import load_csv, load_text
from nolabel.errors import NolabelError


def pixels(image: Image.Image) -> np.ndarray:
    """(H, W, 3) values of an image of a data set (gray data sets give L images)."""
    assert image.mode in ("RGB", "L")
    return np.asarray(image.convert("RGB"))


# ---- image folders ------------------------------------------------------------------------
def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_folder_converts_every_mode_and_reports_broken_files(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((4, 5, 3), (10, 20, 30), np.uint8)).save(tmp_path / "a_rgb.JPG", quality=100)
    Image.fromarray(np.full((4, 4), 77, np.uint8), mode="L").save(tmp_path / "b_gray.png")
    palette = Image.new("P", (3, 3))
    palette.putpalette([200, 10, 50] + [0, 0, 0] * 255)
    palette.save(tmp_path / "c_palette.png")
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent becomes white
    rgba[1, 0] = (0, 0, 0, 128)  # half black on white: 255 * (1 - 128/255) = 127
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "d_rgba.png")
    Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).save(tmp_path / "e_16bit.png")
    Image.fromarray(np.array([[65535, 257 * 7, 0]], dtype=np.int32)).save(tmp_path / "e_32bit.tif")  # mode "I"
    (tmp_path / "f_corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    noisy = _png_bytes(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    (tmp_path / "g_truncated.png").write_bytes(noisy[: len(noisy) // 2])
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "h.webp")
    Image.fromarray(np.full((2, 3), 9, np.uint8), mode="L").save(tmp_path / "i_gray.pgm")  # ORL-style faces
    Image.fromarray(np.full((2, 2, 3), (0, 250, 0), np.uint8)).save(tmp_path / "j_anim.gif")
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / ".hidden.png")

    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*f_corrupt\.jpg.*g_truncated\.png"):
        data = load_image_folder(tmp_path)
    assert data.ids == ["a_rgb.JPG", "b_gray.png", "c_palette.png", "d_rgba.png", "e_16bit.png", "e_32bit.tif", "h.webp",
                        "i_gray.pgm", "j_anim.gif"]
    assert data.skipped == ["f_corrupt.jpg", "g_truncated.png"]
    assert data.labels is None and data.class_names is None and data.modality == "image"
    images = [pixels(data.load(i)) for i in range(len(data))]
    assert np.abs(images[0].astype(int) - (10, 20, 30)).max() <= 3  # JPEG, quality 100
    assert (images[1] == 77).all()
    assert (images[2] == (200, 10, 50)).all()
    assert images[3][0, 0].tolist() == [255, 0, 0]
    assert images[3][0, 1].tolist() == [255, 255, 255]
    assert images[3][1, 0].tolist() == [127, 127, 127]
    assert images[4][0, :, 0].tolist() == [0, 100, 255]
    assert images[5][0, :, 0].tolist() == [255, 7, 0]
    assert (images[7] == 9).all() and np.abs(images[8].astype(int) - (0, 250, 0)).max() <= 8  # GIF: a palette

    # Without verification the broken file is listed, and loading it is a one-line error.
    unverified = load_image_folder(tmp_path, verify=False)
    assert len(unverified) == 11 and unverified.skipped == []
    with pytest.raises(NolabelError, match="cannot read image .*f_corrupt.jpg"):
        unverified.load(unverified.ids.index("f_corrupt.jpg"))


@pytest.mark.parametrize("verify", [True, False])
def test_folder_channels_are_decided_once_per_data_set(tmp_path, verify):
    """Colour if any file is stored in colour, else gray; never decided per image."""
    gray = tmp_path / "gray"
    gray.mkdir()
    Image.fromarray(np.full((4, 4), 9, np.uint8), mode="L").save(gray / "a.png")
    gray_palette = Image.new("P", (4, 4))
    gray_palette.putpalette([v for g in range(256) for v in (g, g, g)])
    gray_palette.save(gray / "b.png")
    data = load_image_folder(gray, verify=verify)
    assert {data.load(i).mode for i in range(len(data))} == {"L"}

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((4, 4), 9, np.uint8), mode="L").save(photos / "a.png")
    Image.fromarray(np.full((4, 4, 3), 50, np.uint8)).save(photos / "b_looks_gray.png")  # RGB with R = G = B
    Image.fromarray(np.full((4, 4, 3), (200, 10, 50), np.uint8)).save(photos / "c.png")
    data = load_image_folder(photos, verify=verify)
    assert {data.load(i).mode for i in range(len(data))} == {"RGB"}
    from nolabel import backbones

    x = backbones.get("pixels", device="cpu").embed([data.load(i) for i in range(len(data))])
    assert x.shape == (3, 48)


def test_folder_labels_from_first_level_subfolders(tmp_path):
    for rel in ["dog/b.png", "cat/a.png", "dog/deeper/c.png", "bird/z.bmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / rel)
    data = load_dataset(str(tmp_path))
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.ids == ["bird/z.bmp", "cat/a.png", "dog/b.png", "dog/deeper/c.png"]
    assert data.labels.tolist() == [0, 1, 2, 2]


def test_folder_with_images_in_root_and_subfolders_has_no_labels(tmp_path):
    (tmp_path / "sub").mkdir()
    for rel in ["top.png", "sub/inner.png"]:
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / rel)
    with pytest.warns(UserWarning, match="both directly in"):
        data = load_image_folder(tmp_path)
    assert data.labels is None and len(data) == 2


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(NolabelError, match=r"no images found in .*looked for \.jpg"):
        load_image_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    for i in range(3):  # a phone's photos in a format PIL does not read: the message says what is there
        (tmp_path / "sub" / f"IMG_{i}.HEIC").write_bytes(b"x")
    with pytest.raises(NolabelError, match=r"no images found .*; it holds 3 \.heic, 1 \.txt$"):
        load_dataset(str(tmp_path))
    with pytest.raises(NolabelError, match="no such"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(NolabelError, match="none of the 1 images"):
        load_image_folder(tmp_path)
    single = tmp_path / "orl"
    single.mkdir()
    (single / "orl.mat").write_bytes(b"")
    with pytest.raises(NolabelError, match=r"holds one file, orl\.mat, and no images; pass the file itself: .*orl\.mat$"):
        load_dataset(str(single))


def test_split_folders_are_resolved(tmp_path):
    for rel in ["train/cat/a.png", "train/dog/b.png", "test/cat/c.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / rel)
    train = load_dataset(str(tmp_path), split="train")
    assert train.ids == ["cat/a.png", "dog/b.png"] and train.class_names == ["cat", "dog"]
    assert train.name == f"{tmp_path.name}-train"
    assert load_dataset(str(tmp_path), split="test").ids == ["cat/c.png"]
    with pytest.raises(NolabelError, match="no split 'val'"):
        load_dataset(str(tmp_path), split="val")


def test_real_cifar10_jpeg_test_folder():
    folder = shared_path("datasets", "cifar10-jpeg", "test")
    t0 = time.perf_counter()
    data = load_image_folder(folder)
    seconds = time.perf_counter() - t0
    assert len(data) == 10000 and data.skipped == []
    assert data.class_names[:3] == ["airplane", "automobile", "bird"] and len(data.class_names) == 10
    assert np.bincount(data.labels).tolist() == [1000] * 10
    assert data.load(0).size == (32, 32) and data.load(0).mode == "RGB"
    assert seconds < 20, f"verifying 10,000 small JPEGs took {seconds:.1f} s"


# ---- MNIST / Fashion-MNIST ---------------------------------------------------------------
def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """IDX: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def test_real_mnist_test_split():
    root = shared_path("datasets", "mnist")
    data = load_dataset(f"mnist:{root}")
    assert data.name == "mnist-test" and len(data) == 10000
    assert data.labels[0] == 7 and np.bincount(data.labels, minlength=10).sum() == 10000
    assert data.source.shape == (10000, 28, 28) and data.source.dtype == np.uint8
    first = pixels(data.load(0))
    assert first.shape == (28, 28, 3) and first.max() == 255 and first[0, 0].tolist() == [0, 0, 0]
    assert read_idx(root / "train-labels-idx1-ubyte.gz", 0x801).shape == (60000,)
    with pytest.raises(NolabelError, match="no train-images-idx3-ubyte.gz"):
        load_mnist(root, split="train")


def test_fashion_idx_files_and_corruption(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28) % 251
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([9, 0, 3]), compress=False)  # raw, not gzip
    data = load_dataset(f"fashion-mnist:{tmp_path}", split="train")
    assert data.name == "fashion-mnist-train" and data.labels.tolist() == [9, 0, 3]
    assert data.class_names[9] == "Ankle boot"
    assert (pixels(data.load(2))[:, :, 0] == images[2]).all()

    # swapped files: wrong magic number
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes((tmp_path / "train-labels-idx1-ubyte").read_bytes())
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    with pytest.raises(NolabelError, match="magic number 0x00000801, expected 0x00000803"):
        load_mnist(tmp_path, kind="fashion")
    # truncated payload
    good = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good[:-10]))
    with pytest.raises(NolabelError, match="truncated or corrupt"):
        load_mnist(tmp_path, kind="fashion")
    # broken gzip stream
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:100])
    with pytest.raises(NolabelError, match="corrupt gzip"):
        load_mnist(tmp_path, kind="fashion")


# ---- CIFAR --------------------------------------------------------------------------------
def _cifar_images(n: int, offset: int) -> np.ndarray:
    """(n, 32, 32, 3): red = image number, green = row, blue = column."""
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[..., 0] = (np.arange(n) + offset)[:, None, None]
    images[..., 1] = np.arange(32)[None, :, None]
    images[..., 2] = np.arange(32)[None, None, :]
    return images


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """Official layout: per image 1024 red, 1024 green, 1024 blue values, each plane row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _dump(path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _write_cifar10(folder, per_batch: int = 2) -> None:
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_vis": 3072})
    for b, file in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [(b + j) % 10 for j in range(per_batch)]
        _dump(folder / file, {b"data": _cifar_rows(_cifar_images(per_batch, 10 * b)), b"labels": labels,
                              b"batch_label": file.encode(), b"filenames": [b"x.png"] * per_batch})


def test_cifar10_pickles(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    test = load_dataset(f"cifar10:{tmp_path}")
    assert test.name == "cifar10-test" and len(test) == 2 and test.class_names[1] == "automobile"
    assert test.labels.tolist() == [5, 6]
    image = pixels(test.load(1))
    assert image[7, 19].tolist() == [51, 7, 19]  # red 50 + 1, green = row, blue = column
    train = load_cifar(tmp_path / "cifar-10-batches-py", split="train")  # the inner folder works too
    assert len(train) == 10 and train.source[4:6, 0, 0, 0].tolist() == [20, 21]
    with pytest.raises(NolabelError, match="no split 'valid'"):
        load_cifar(tmp_path, split="valid")


def test_cifar_archive_is_unpacked_and_foreign_pickles_refused(tmp_path):
    staging = tmp_path / "staging"
    _write_cifar10(staging / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert len(load_cifar(root)) == 2 and (root / "cifar-10-batches-py" / "test_batch").is_file()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(NolabelError, match=r"not an official CIFAR pickle \(refusing to load .*print\)"):
        load_cifar(root)
    with pytest.raises(NolabelError, match=r"no CIFAR10 in .*cifar-10-python.tar.gz.*fetch_benchmark"):
        load_cifar(tmp_path / "empty")


def test_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"fine{i:02d}" for i in range(100)]
    coarse = [f"super{i:02d}" for i in range(20)]
    _dump(folder / "meta", {b"fine_label_names": [n.encode() for n in fine],
                            b"coarse_label_names": [n.encode() for n in coarse]})
    for split, n in (("train", 4), ("test", 3)):
        _dump(folder / split, {b"data": _cifar_rows(_cifar_images(n, 0)), b"fine_labels": [99, 0, 42, 7][:n],
                               b"coarse_labels": [19, 0, 5, 3][:n], b"filenames": [b"x"] * n})
    data = load_dataset(f"cifar100:{tmp_path}")
    assert data.labels.tolist() == [99, 0, 42] and len(data.class_names) == 100
    coarse_data = load_dataset(f"cifar100-20:{tmp_path}", split="train")
    assert coarse_data.labels.tolist() == [19, 0, 5, 3] and coarse_data.class_names == coarse
    assert coarse_data.name == "cifar100-20-train"


# ---- STL-10 -------------------------------------------------------------------------------
def _stl_bytes(images: np.ndarray) -> bytes:
    """Official layout: per image the red, green, blue 96x96 planes, each column-major."""
    return b"".join(image[:, :, c].flatten(order="F").tobytes() for image in images for c in range(3))


def test_stl10_binaries(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    (folder / "train_X.bin").write_bytes(_stl_bytes(train))
    (folder / "train_y.bin").write_bytes(bytes([1, 10]))
    (folder / "unlabeled_X.bin").write_bytes(_stl_bytes(unlabeled))
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    data = load_dataset(f"stl10:{tmp_path}", split="train")
    assert data.labels.tolist() == [0, 9] and data.class_names == names
    assert all((pixels(data.load(i)) == train[i]).all() for i in range(2))
    free = load_stl10(tmp_path, split="unlabeled")
    assert free.labels is None and len(free) == 3 and (pixels(free.load(2)) == unlabeled[2]).all()
    (folder / "test_X.bin").write_bytes(_stl_bytes(train)[:-5])
    with pytest.raises(NolabelError, match="not a whole number of 96x96x3 images"):
        load_stl10(tmp_path, split="test")


# ---- .mat ---------------------------------------------------------------------------------
def _extent(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_real_coil20_is_upright():
    data = load_dataset(str(shared_path("datasets", "coil20", "COIL20.mat")))
    assert len(data) == 1440 and data.num_classes == 20 and data.source.shape[1:] == (32, 32)
    assert np.bincount(data.labels).tolist() == [72] * 20
    height, width = _extent(data.source[360] > 40)  # object 6 at pose 0: a toy car seen from the side
    assert width > 2 * height
    height, width = _extent(data.source[216] > 40)  # object 4: a standing cat figurine
    assert height > width


def test_real_orl_faces_are_upright():
    data = load_dataset(str(shared_path("datasets", "orl", "orl.mat")))
    assert len(data) == 400 and data.num_classes == 40 and data.class_names[:2] == ["1", "2"]
    mean = data.source.astype(float).mean(0)
    mirrored = np.corrcoef(mean.ravel(), mean[:, ::-1].ravel())[0, 1]
    flipped = np.corrcoef(mean.ravel(), mean[::-1].ravel())[0, 1]
    assert mirrored > 0.8 > flipped  # an upright face is left-right symmetric, not top-bottom


def test_mat_layouts(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.float64).reshape(3, 4, 4) / 47.0  # floats in [0, 1]
    columns = np.stack([im.flatten(order="F") for im in images], axis=1)  # pixels x N, column-major
    scipy.io.savemat(tmp_path / "cols.mat", {"fea": columns, "gnd": np.array([[5, 3, 5]])})
    data = load_mat(tmp_path / "cols.mat")
    assert data.labels.tolist() == [1, 0, 1] and data.class_names == ["3", "5"]
    assert (data.source == np.rint(images * 255).astype(np.uint8)).all()
    scipy.io.savemat(tmp_path / "rows.mat", {"fea": (columns.T * 255).round().astype(np.uint8), "gnd": np.array([1, 2, 1])})
    assert (load_dataset(str(tmp_path / "rows.mat")).source == data.source).all()
    scipy.io.savemat(tmp_path / "vec.mat", {"X": np.ones((6, 5)), "Y": np.arange(6)})
    vectors = load_mat(tmp_path / "vec.mat")
    assert vectors.modality == "vector" and vectors.load(0).dtype == np.float32 and vectors.load(0).shape == (5,)
    scipy.io.savemat(tmp_path / "bad.mat", {"fea": np.ones((7, 5)), "gnd": np.arange(3)})
    with pytest.raises(NolabelError, match="fea is 7 x 5 but gnd has 3 labels"):
        load_mat(tmp_path / "bad.mat")
    (tmp_path / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 HDF5 schema 1.00 .".ljust(128) + b"\0" * 64)
    with pytest.raises(NolabelError, match="v7.3"):
        load_mat(tmp_path / "v73.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 20)
    with pytest.raises(NolabelError, match="cannot read .*junk.mat as a MATLAB file"):
        load_mat(tmp_path / "junk.mat")
    colour = np.arange(2 * 3 * 3 * 3).reshape(2, 3, 3, 3)
    flat = np.stack([im.flatten(order="F") for im in colour])
    assert (unflatten(flat, (3, 3, 3)) == colour).all()
    assert (unflatten(colour.reshape(2, -1), (3, 3, 3), order="C") == colour).all()


# ---- arrays -------------------------------------------------------------------------------
def test_arrays(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    np.save(tmp_path / "imgs_labels.npy", np.array([3, 1, 3, 1, 2]))
    data = load_dataset(str(tmp_path / "imgs.npy"))
    assert data.modality == "image" and data.labels.tolist() == [2, 0, 2, 0, 1] and data.class_names == ["1", "2", "3"]
    assert (pixels(data.load(4))[:, :, 1] == images[4]).all()

    chw = np.random.default_rng(3).random((4, 3, 5, 6)).astype(np.float32)
    np.savez(tmp_path / "set.npz", x=chw, y=np.array(["b", "a", "b", "c"]))
    colour = load_array(tmp_path / "set.npz")
    assert colour.source.shape == (4, 5, 6, 3) and colour.class_names == ["a", "b", "c"]
    assert np.abs(colour.source[1].astype(float) / 255 - chw[1].transpose(1, 2, 0)).max() <= 0.5 / 255 + 1e-6

    feats = np.random.default_rng(4).normal(size=(8, 16))
    np.savez(tmp_path / "feats.npz", features=feats, labels=np.array([0, 1] * 4), class_names=np.array(["no", "yes"]))
    vectors = load_dataset(str(tmp_path / "feats.npz"))
    assert vectors.modality == "vector" and vectors.class_names == ["no", "yes"]
    assert vectors.load(3).dtype == np.float32 and np.allclose(vectors.load(3), feats[3], atol=1e-6)

    with pytest.raises(NolabelError, match="images must be uint8 or floats in"):
        array_dataset(np.full((2, 4, 4), 300.0))
    with pytest.raises(NolabelError, match="expected"):
        array_dataset(np.zeros(5))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(NolabelError, match="key=NAME"):
        load_array(tmp_path / "two.npz")


def test_encode_labels_sorts_numbers_numerically():
    codes, names = encode_labels(["10", "2", "1", "2"])
    assert codes.tolist() == [2, 1, 0, 1] and names == ["1", "2", "10"]
    codes, names = encode_labels(["pear", "apple", "pear"])
    assert codes.tolist() == [1, 0, 1] and names == ["apple", "pear"]


# ---- text ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,count,classes", [("StackOverflow", 16407, 20), ("SearchSnippets", 12295, 8), ("Biomedical", 19448, 20)])
def test_real_short_text_sets(name, count, classes):
    path = shared_path("datasets", "text", f"{name}.txt")
    data = load_dataset(str(path))
    assert data.modality == "text" and len(data) == count and data.num_classes == classes
    raw = path.with_name(f"{name}_label.txt").read_text().split()
    assert data.class_names == [str(i) for i in range(1, classes + 1)]
    assert data.labels[0] == int(raw[0]) - 1 and data.labels[-1] == int(raw[-1]) - 1
    assert isinstance(data.load(0), str) and data.load(0).strip()


def test_real_agnews_csv():
    data = load_dataset(str(shared_path("datasets", "text", "agnews_test.csv")))
    assert len(data) == 7600 and data.class_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert np.bincount(data.labels).tolist() == [1900] * 4
    assert data.labels[0] == 2 and data.load(0).startswith("Fears for T N pension after talks Unions representing")


def test_text_files(tmp_path):
    (tmp_path / "docs.txt").write_text("first doc\nsecond\x0cwith a form feed\nthird\n")
    (tmp_path / "docs_label.txt").write_text("spam\nham\nspam\n")
    data = load_text(tmp_path / "docs.txt")
    assert data.source == ["first doc", "second\x0cwith a form feed", "third"]
    assert data.labels.tolist() == [1, 0, 1] and data.class_names == ["ham", "spam"]
    (tmp_path / "docs_label.txt").write_text("spam\nham\n")
    with pytest.raises(NolabelError, match="has 3 lines but .*docs_label.txt has 2"):
        load_dataset(str(tmp_path / "docs.txt"))
    (tmp_path / "alone.txt").write_text("just text\n")
    assert load_dataset(str(tmp_path / "alone.txt")).labels is None


def test_csv_with_header_and_columns(tmp_path):
    (tmp_path / "reviews.csv").write_text('id,title,body,category\n7,Good,"nice, really",pos\n8,Bad,awful,neg\n')
    data = load_csv(tmp_path / "reviews.csv")
    assert data.source == ["Good nice, really", "Bad awful"] and data.class_names == ["neg", "pos"]
    only_body = load_csv(tmp_path / "reviews.csv", text_columns="body", label_column=None)
    assert only_body.source == ["nice, really", "awful"] and only_body.labels is None
    with pytest.raises(NolabelError, match="no column 'missing'"):
        load_csv(tmp_path / "reviews.csv", text_columns="missing")
    (tmp_path / "ragged.csv").write_text("1,a\n2\n")
    with pytest.raises(NolabelError, match="row 2 has 1 fields"):
        load_csv(tmp_path / "ragged.csv")


# ---- resolver -----------------------------------------------------------------------------
def test_digits_and_registry():
    data = load_dataset("digits")
    assert len(data) == 1797 and data.source.dtype == np.uint8 and data.source.max() == 255
    assert data.labels[:10].tolist() == list(range(10)) and data.class_names == [str(d) for d in range(10)]
    assert pixels(data.load(0)).shape == (8, 8, 3)
    names = [name for name, _ in describe()]
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-20", "stl10"} <= set(names)
    assert all(doc for _, doc in describe()) and "folder" in registry


def test_resolver_errors_are_one_line(tmp_path):
    for spec, pattern in [
        ("imagenet:/data", "unknown dataset format 'imagenet'"),
        (str(tmp_path / "nothing.txt"), "no such file or folder"),
        ("mnist", "mnist needs the folder"),
        (f"stl10:{tmp_path}", "stl10_binary.tar.gz"),
    ]:
        with pytest.raises(NolabelError, match=pattern) as info:
            load_dataset(spec)
        assert "\n" not in str(info.value)
    (tmp_path / "table.xlsx").write_bytes(b"x")
    with pytest.raises(NolabelError, match="cannot tell what"):
        load_dataset(str(tmp_path / "table.xlsx"))


def test_items_dataset(tmp_path):
    Image.fromarray(np.full((3, 3), 9, np.uint8)).save(tmp_path / "one.png")
    images = items_dataset([str(tmp_path / "one.png")])
    assert images.modality == "image" and (pixels(images.load(0)) == 9).all()
    assert pixels(open_rgb(tmp_path / "one.png")).shape == (3, 3, 3)
    texts = items_dataset(["hello", "world"])
    assert texts.modality == "text" and texts.load(1) == "world"
    pil = items_dataset([Image.new("L", (2, 2), 5)])
    assert pixels(pil.load(0)).tolist() == [[[5, 5, 5]] * 2] * 2
    with pytest.raises(NolabelError, match="got a mix"):
        items_dataset(["text", 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(str(tmp_path / "one.png"))) == 1


def test_jsonl_documents_labels_and_bad_lines(tmp_path):
    from nolabel.data import load_dataset

    path = tmp_path / "posts.jsonl"
    lines = [{"id": 7, "title": "how to sort a list", "label": "python"}, {"id": 8, "title": "  ", "label": "java"},
             {"id": 9, "title": "hashmap vs treemap", "label": "java"}, {"title": "list comprehension", "label": "python"}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    with pytest.warns(UserWarning, match=r"skipped 1 blank document"):
        data = load_dataset(path)
    assert data.modality == "text" and data.source == ["how to sort a list", "hashmap vs treemap", "list comprehension"]
    assert data.class_names == ["java", "python"] and data.labels.tolist() == [1, 0, 1] and data.skipped == ["1"]
    assert load_dataset(f"jsonl:{path}", text_columns="label").source[0] == "python"
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(NolabelError, match=r"bad.jsonl line 2 is not JSON"):
        load_dataset(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text('["a", "b"]\n')
    with pytest.raises(NolabelError, match=r"line 1 holds a list, not an object"):
        load_dataset(tmp_path / "list.jsonl")
