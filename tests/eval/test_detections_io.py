"""Results files: VOC devkit per-class text files and COCO JSON."""

import numpy as np
import pytest
import torch

from ablate.errors import AblateError
from ablate.eval.detections_io import (read_coco_results, read_voc_results,
                                       validate_coco_results, voc_results_path,
                                       write_coco_results, write_voc_results)
from ablate.eval.voc_map import voc_eval

CLASSES = ["aeroplane", "bicycle", "bird"]


def random_dets(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (k, 2))
        out.append({"boxes": np.concatenate([xy, xy + rng.uniform(1, 200, (k, 2))], 1),
                    "scores": rng.random(k), "labels": rng.integers(0, 3, k)})
    return out


def test_voc_write_format(tmp_path):
    dets = [{"boxes": torch.tensor([[0.0, 1.0, 9.0, 19.0]]), "scores": torch.tensor([0.5]),
             "labels": torch.tensor([1])}]
    paths = write_voc_results(tmp_path, "test", CLASSES, ["000005"], dets)
    assert paths == [voc_results_path(tmp_path, "test", c) for c in CLASSES]
    assert paths[1].name == "comp4_det_test_bicycle.txt"
    # 0-based pixel indices -> devkit 1-based.
    assert paths[1].read_text() == "000005 0.500000 1.0 2.0 10.0 20.0\n"
    assert paths[0].read_text() == "" and paths[2].read_text() == ""


def test_voc_round_trip(tmp_path):
    dets = random_dets(40)
    ids = [f"{i:06d}" for i in range(40)]
    write_voc_results(tmp_path, "val", CLASSES, ids, dets)
    back = read_voc_results(tmp_path, "val", CLASSES, image_ids=ids)
    assert list(back) == ids
    for d, b in zip(dets, back.values()):
        order = np.argsort(d["labels"], kind="stable")          # files are per class
        np.testing.assert_array_equal(b["labels"], d["labels"][order])
        # Exact to the printed precision: same decimal string, same float back.
        want_s = [float(f"{s:.6f}") for s in d["scores"][order]]
        want_b = [[float(f"{x + 1:.1f}") - 1 for x in row] for row in d["boxes"][order]]
        assert b["scores"].tolist() == want_s
        assert b["boxes"].reshape(-1, 4).tolist() == want_b
        assert np.abs(b["boxes"] - d["boxes"][order]).max(initial=0) <= 0.05 + 1e-9
    # Writing what was read gives byte-identical files.
    write_voc_results(tmp_path / "again", "val", CLASSES, ids, list(back.values()))
    for c in CLASSES:
        assert (voc_results_path(tmp_path / "again", "val", c).read_text()
                == voc_results_path(tmp_path, "val", c).read_text())
    # Without image_ids only images with detections appear.
    assert set(read_voc_results(tmp_path, "val", CLASSES)) == {
        i for i, d in zip(ids, dets) if len(d["scores"])}


def test_voc_round_trip_keeps_map(tmp_path):
    # Evaluating the re-read detections gives the same mAP (coordinates on the 0.1 grid).
    rng = np.random.default_rng(3)
    dets = random_dets(30, seed=3)
    for d in dets:
        d["boxes"] = np.round(d["boxes"])
        d["scores"] = np.round(d["scores"], 6)
    gts = [{"boxes": d["boxes"][:2] + rng.integers(-3, 4, (min(2, len(d["boxes"])), 4)),
            "labels": d["labels"][:2]} for d in dets]
    ids = [str(i) for i in range(30)]
    write_voc_results(tmp_path, "test", CLASSES, ids, dets, coord_offset=(1, 1, 0, 0))
    back = read_voc_results(tmp_path, "test", CLASSES, ids, coord_offset=(1, 1, 0, 0))
    a = voc_eval(gts, dets, 3, metric="voc2010")["ap"]
    b = voc_eval(gts, [back[i] for i in ids], 3, metric="voc2010")["ap"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("line, why", [
    ("000001 0.5 1 2 3\n", "5 fields"),
    ("000001 high 1 2 3 4\n", "could not convert"),
    ("000001 0.5 1 2 3 nan\n", "non-finite"),
])
def test_voc_malformed_line(tmp_path, line, why):
    for c in CLASSES:
        voc_results_path(tmp_path, "test", c).write_text("000001 0.9 1 2 3 4\n")
    voc_results_path(tmp_path, "test", "bird").write_text("000001 0.9 1 2 3 4\n\n" + line)
    with pytest.raises(AblateError, match=rf"comp4_det_test_bird\.txt:3: .*{why}"):
        read_voc_results(tmp_path, "test", CLASSES)


def test_voc_errors(tmp_path):
    with pytest.raises(AblateError, match="missing"):
        read_voc_results(tmp_path, "test", CLASSES)
    write_voc_results(tmp_path, "test", CLASSES, ["a"], random_dets(1, seed=2))
    voc_results_path(tmp_path, "test", "bird").write_text("zzz 0.9 1 2 3 4\n")
    with pytest.raises(AblateError, match=r"bird\.txt:1: unknown image id 'zzz'"):
        read_voc_results(tmp_path, "test", CLASSES, image_ids=["a"])
    bad = [{"boxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.array([5])}]
    with pytest.raises(AblateError, match="label 5"):
        write_voc_results(tmp_path, "test", CLASSES, ["a"], bad)
    with pytest.raises(AblateError, match="whitespace"):
        write_voc_results(tmp_path, "test", CLASSES, ["a b"], random_dets(1))


def test_coco_round_trip(tmp_path):
    res = [{"image_id": np.int64(3), "category_id": 1, "bbox": np.array([1.5, 2.0, 3.0, 4.25]),
            "score": np.float32(0.75)},
           {"image_id": 4, "category_id": 2, "bbox": [0.1, 0.2, 0.3, 0.4], "score": 0.123456789}]
    path = write_coco_results(tmp_path / "sub" / "res.json", res)
    assert read_coco_results(path) == [
        {"image_id": 3, "category_id": 1, "bbox": [1.5, 2.0, 3.0, 4.25], "score": 0.75},
        {"image_id": 4, "category_id": 2, "bbox": [0.1, 0.2, 0.3, 0.4], "score": 0.123456789}]
    write_coco_results(tmp_path / "empty.json", [])
    assert read_coco_results(tmp_path / "empty.json") == []


@pytest.mark.parametrize("text, match", [
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},', "invalid JSON at line 1"),
    ('{"image_id": 1}', "must be a JSON list"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, 3]', "entry 1: expected an object"),
    ('[{"image_id": "1", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]', "entry 0: 'image_id'"),
    ('[{"image_id": 1, "category_id": 1.5, "bbox": [0, 0, 1, 1], "score": 0.5}]', "'category_id'"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}]', "'bbox'"),
    ('[{"image_id": 1, "category_id": 1, "score": 0.5}]', "'bbox'"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": true}]', "'score'"),
])
def test_coco_malformed(tmp_path, text, match):
    path = tmp_path / "res.json"
    path.write_text(text)
    with pytest.raises(AblateError, match=match) as info:
        read_coco_results(path)
    assert "res.json" in str(info.value)


def test_coco_write_rejects_bad_entries(tmp_path):
    with pytest.raises(AblateError, match="entry 0"):
        write_coco_results(tmp_path / "r.json", [{"image_id": 1, "score": 0.3}])
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(AblateError, match="not found"):
        read_coco_results(tmp_path / "nope.json")


def test_validate_accepts_numpy_types_and_rejects_nan():
    # Non-plain types skip the fast path and go through the per-entry check.
    ok = [{"image_id": np.int64(1), "category_id": np.int32(2), "score": np.float32(0.5),
           "bbox": (np.float64(1), 2, 3.5, 4)}]
    validate_coco_results(ok)
    plain = {"image_id": 1, "category_id": 2, "score": 0.5, "bbox": [1.0, 2.0, 3.0, 4.0]}
    validate_coco_results([plain] * 3)
    with pytest.raises(AblateError, match="entry 2: 'bbox'"):
        validate_coco_results([plain, plain, dict(plain, bbox=[1.0, float("nan"), 3.0, 4.0])])
    with pytest.raises(AblateError, match="entry 1: 'score'"):
        validate_coco_results([plain, dict(plain, score=float("inf"))])
    with pytest.raises(AblateError, match="entry 0: 'image_id'"):
        validate_coco_results([dict(plain, image_id=True)])
    validate_coco_results([{"image_id": 1, "category_id": 2, "score": 0.5}], need_bbox=False)
