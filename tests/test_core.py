"""Registry, atomic writes, assignment and item artifacts."""
import numpy as np
import pytest

from nolabel.assignments import Assignment
from nolabel.data.base import Dataset
from nolabel.errors import NolabelError
from nolabel.io import atomic_path, read_json, write_json
from nolabel.items import load_items, save_items
from nolabel.registry import Registry


def test_registry_registers_gets_and_lists_with_wildcards():
    reg = Registry("widget")

    @reg.register("a-one")
    class A:
        """First widget."""

    reg.register("b-two", doc="second")(object)
    assert reg.get("a-one") is A
    assert reg.names("a-*") == ["a-one"]
    assert reg.describe() == [("a-one", "First widget."), ("b-two", "second")]
    with pytest.raises(NolabelError, match="unknown widget 'c'; known: a-one, b-two"):
        reg.get("c")
    with pytest.raises(ValueError):
        reg.register("a-one")(object)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("killed")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unwritable_folder_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NolabelError, match="cannot write"):
        write_json(blocker / "sub" / "out.json", {})


def test_assignment_round_trips_through_npz_and_csv(tmp_path):
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    a = Assignment.from_proba(p, ids=np.array(["x.png", "y,odd.png", "z.png"]))
    a.save(tmp_path / "assignment.npz")
    back = Assignment.load(tmp_path / "assignment.npz")
    np.testing.assert_array_equal(back.clusters, [0, 1, 0])
    np.testing.assert_allclose(back.confidences, [0.9, 0.8, 0.6])
    csv_back = Assignment.load(tmp_path / "assignment.csv")
    assert csv_back.ids.tolist() == ["x.png", "y,odd.png", "z.png"]
    np.testing.assert_array_equal(csv_back.clusters, back.clusters)


def test_items_keep_ids_labels_and_class_names(tmp_path):
    ds = Dataset("t", "text", ["a", "b", "c"], ids=["0", "1", "2"], labels=[1, 0, 1], class_names=["neg", "pos"])
    save_items(tmp_path / "f.npy", ds)
    items = load_items(tmp_path / "f.npy")
    assert items.ids.tolist() == ["0", "1", "2"]
    assert items.labels.tolist() == [1, 0, 1] and items.class_names == ["neg", "pos"]
    with pytest.raises(NolabelError, match="no item index"):
        load_items(tmp_path / "other.npy")


def test_dataset_subset_and_validation():
    ds = Dataset("t", "text", ["a", "b", "c"], ids=["0", "1", "2"], labels=[2, 0, 1])
    sub = ds.subset([2, 0])
    assert sub.source == ["c", "a"] and sub.labels.tolist() == [1, 2] and sub.ids == ["2", "0"]
    with pytest.raises(ValueError):
        Dataset("t", "text", ["a"], ids=["0", "1"])


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from nolabel.io import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
