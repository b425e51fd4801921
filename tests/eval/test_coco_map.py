"""COCO mAP wrapper: identical to calling pycocotools COCOeval directly, with either engine
(pycocotools, or faster-coco-eval's C++ COCOeval_faster)."""

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ablate.errors import AblateError
from ablate.eval.coco_map import (STAT_NAMES, build_coco_gt, coco_eval,
                                  detections_to_coco_results, load_coco_gt)

CATS = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "bird"}]


def gt_dataset():
    """4 images, 3 categories (non-contiguous ids), small / medium / large boxes, one crowd."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for img in (10, 11, 12, 13):
        images.append({"id": img, "height": 480, "width": 640})
        for _ in range(5):
            w, h = rng.choice([12.0, 50.0, 150.0]), rng.choice([15.0, 60.0, 130.0])
            x, y = rng.uniform(0, 400), rng.uniform(0, 300)
            anns.append({"id": len(anns) + 1, "image_id": img, "bbox": [x, y, w, h],
                         "category_id": int(rng.choice([1, 3, 7])), "area": w * h,
                         "iscrowd": 0})
    anns[3]["iscrowd"] = 1
    return {"images": images, "annotations": anns, "categories": CATS}


def noisy_results(dataset, seed=1):
    rng = np.random.default_rng(seed)
    res = []
    for a in dataset["annotations"]:
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = a["bbox"]
            res.append({"image_id": a["image_id"], "category_id": a["category_id"],
                        "bbox": [x + rng.normal(0, 3), y + rng.normal(0, 3), w * rng.uniform(.8, 1.2),
                                 h * rng.uniform(.8, 1.2)], "score": float(rng.random())})
    for _ in range(15):  # false positives
        res.append({"image_id": int(rng.choice([10, 11, 12, 13])),
                    "category_id": int(rng.choice([1, 3, 7])),
                    "bbox": [*rng.uniform(0, 400, 2), *rng.uniform(5, 100, 2)],
                    "score": float(rng.random())})
    return res


def direct(dataset, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = load_coco_gt(copy.deepcopy(dataset))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


ENGINES = ["pycocotools", "faster_coco_eval"]


@pytest.mark.parametrize("backend", ENGINES)
def test_stats_equal_pycocotools(capsys, backend):
    ds, res = gt_dataset(), noisy_results(gt_dataset())
    before = copy.deepcopy(res)
    out = coco_eval(copy.deepcopy(ds), res, backend=backend)
    assert capsys.readouterr().out == ""          # pycocotools' printing suppressed
    assert res == before                          # loadRes did not mutate the caller's dicts
    ev = direct(ds, res)
    tol = 0 if backend == "pycocotools" else 1e-15  # see test_engines_agree
    assert list(out["stats"]) == list(STAT_NAMES)
    assert [out["stats"][n] for n in STAT_NAMES] == pytest.approx(
        [float(v) for v in ev.stats], abs=tol, rel=0)
    assert 0.1 < out["stats"]["AP"] < 0.9
    for k, cat in enumerate(CATS):
        p = ev.eval["precision"][:, :, k, 0, -1]
        assert out["per_category"][cat["name"]] == pytest.approx(np.mean(p[p > -1]), abs=tol,
                                                                 rel=0)


def big_case(seed: int, n_images: int = 60):
    """Many images and categories: crowds, all three area ranges, images without GT or without
    detections, more than 100 detections on some images (maxDets cuts) and tied scores."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 4, 5, 8)]
    images, anns, res = [], [], []
    for img in range(1, n_images + 1):
        images.append({"id": img, "height": 400, "width": 600})
        for _ in range(int(rng.integers(0, 8))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            x, y = rng.uniform(0, 300, 2)
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(rng.choice(
                [1, 2, 4, 5, 8])), "bbox": [x, y, w, h], "area": float(w * h * rng.uniform(.6, 1)),
                "iscrowd": int(rng.random() < 0.08)})
    for a in anns:
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = a["bbox"]
            res.append({"image_id": a["image_id"], "category_id": a["category_id"] if rng.random()
                        < .85 else int(rng.choice([1, 2, 4, 5, 8])),
                        "bbox": [x + rng.normal(0, w / 8), y + rng.normal(0, h / 8),
                                 w * rng.uniform(.7, 1.3), h * rng.uniform(.7, 1.3)],
                        "score": float(np.round(rng.random(), 1))})       # ties
    for img in rng.choice(np.arange(1, n_images + 1), 4, replace=False):  # >100 on an image
        for _ in range(130):
            res.append({"image_id": int(img), "category_id": int(rng.choice([1, 2, 4, 5, 8])),
                        "bbox": [*rng.uniform(0, 500, 2), *rng.uniform(2, 200, 2)],
                        "score": float(np.round(rng.random(), 2))})
    return {"images": images, "annotations": anns, "categories": cats}, res


def faster_direct(dataset, results):
    from faster_coco_eval import COCO as FasterCOCO, COCOeval_faster

    gt = FasterCOCO(copy.deepcopy(dataset))
    ev = COCOeval_faster(gt, gt.loadRes(copy.deepcopy(results)), "bbox",
                         print_function=lambda *a, **k: None)
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engines_agree(seed):
    """The two engines match everywhere but in one documented place: pycocotools' precision is
    tp / (tp + fp + np.spacing(1)), faster-coco-eval's tp / (tp + fp). In float64 the two differ
    only when tp + fp = 1 (1 / (1 + 2^-52) vs 1), so precision arrays differ only there and
    by 2.2e-16, and the summary numbers by less than 1e-15."""
    ds, res = big_case(seed)
    a = coco_eval(copy.deepcopy(ds), res, backend="pycocotools")
    b = coco_eval(copy.deepcopy(ds), res, backend="faster_coco_eval")
    assert a["stats"] == {n: float(v) for n, v in zip(STAT_NAMES, direct(ds, res).stats)}
    assert list(b["stats"].values()) == pytest.approx(list(a["stats"].values()), abs=1e-15, rel=0)
    assert list(b["per_category"].values()) == pytest.approx(list(a["per_category"].values()),
                                                             abs=1e-15, rel=0)
    assert 0.05 < a["stats"]["AP"] < 0.95 and a["stats"]["APs"] > 0 and a["stats"]["APl"] > 0
    pa, pb = direct(ds, res).eval, faster_direct(ds, res).eval
    assert np.array_equal(pa["recall"], pb["recall"]) and np.array_equal(pa["scores"], pb["scores"])
    diff = pa["precision"] != pb["precision"]
    assert np.all(pa["precision"][diff] == 1 / (1 + np.spacing(1)))
    assert np.all(pb["precision"][diff] == 1.0)
    sub = [3, 5, 8, 13]
    assert list(coco_eval(ds, res, img_ids=sub, backend="pycocotools")["stats"].values()) == \
        pytest.approx(list(coco_eval(ds, res, img_ids=sub, backend="faster_coco_eval")["stats"]
                           .values()), abs=1e-15, rel=0)


def test_backend_choice():
    ds = gt_dataset()
    with pytest.raises(AblateError, match="did you mean 'pycocotools'"):
        coco_eval(ds, noisy_results(ds), backend="pycocotool")
    assert coco_eval(ds, noisy_results(ds)) == coco_eval(ds, noisy_results(ds),
                                                         backend="faster_coco_eval")  # auto


@pytest.mark.parametrize("backend", ENGINES)
def test_verbose_prints(capsys, backend):
    ds = gt_dataset()
    coco_eval(ds, noisy_results(ds), verbose=True, backend=backend)
    assert "Average Precision" in capsys.readouterr().out


def test_paths_and_img_ids(tmp_path):
    ds, res = gt_dataset(), noisy_results(gt_dataset())
    (tmp_path / "gt.json").write_text(json.dumps(ds))
    (tmp_path / "res.json").write_text(json.dumps(res))
    out = coco_eval(str(tmp_path / "gt.json"), tmp_path / "res.json")
    assert out == coco_eval(ds, res)
    sub = coco_eval(ds, res, img_ids=[10, 11], backend="pycocotools")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = load_coco_gt(copy.deepcopy(ds))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(res)), "bbox")
        ev.params.imgIds = [10, 11]
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [sub["stats"][n] for n in STAT_NAMES] == [float(v) for v in ev.stats]


@pytest.mark.parametrize("backend", ENGINES)
def test_perfect_detections_give_one(backend):
    ds = gt_dataset()
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
            "score": 1.0} for a in ds["annotations"] if not a["iscrowd"]]
    out = coco_eval(ds, res, backend=backend)
    for name in ("AP", "AP50", "AP75", "AR10", "AR100"):  # AR1: 1 det per image
        assert out["stats"][name] == pytest.approx(1.0, abs=1e-12), name
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in out["per_category"].values())


def test_empty_results_give_zero():
    ds = gt_dataset()
    out = coco_eval(ds, [])
    assert out["stats"] == {n: 0.0 for n in STAT_NAMES}
    assert out["per_category"] == {"cat": 0.0, "dog": 0.0, "bird": 0.0}
    ds["categories"] = CATS + [{"id": 9, "name": "fish"}]      # a category without GT -> NaN
    assert math.isnan(coco_eval(ds, [])["per_category"]["fish"])


def test_bad_inputs_raise(tmp_path):
    ds = gt_dataset()
    good = {"image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    with pytest.raises(AblateError, match="image ids"):
        coco_eval(ds, [dict(good, image_id=99)])
    with pytest.raises(AblateError, match="category"):
        coco_eval(ds, [dict(good, category_id=2)])
    with pytest.raises(AblateError, match="entry 1: 'bbox'"):
        coco_eval(ds, [good, dict(good, bbox=[1, 2])])
    with pytest.raises(AblateError, match="did you mean 'segm'"):
        coco_eval(ds, [good], iou_type="seg")
    with pytest.raises(AblateError, match="not found"):
        coco_eval(tmp_path / "missing.json", [good])


def test_detections_to_coco_results():
    dets = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0, 0, 1, 1]]),
             "scores": torch.tensor([0.9, 0.25]), "labels": torch.tensor([0, 2])},
            {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    out = detections_to_coco_results(dets, [42, 43], [1, 3, 7])
    assert out == [{"image_id": 42, "category_id": 1, "bbox": [10.0, 20.0, 20.0, 40.0],
                    "score": pytest.approx(0.9)},
                   {"image_id": 42, "category_id": 7, "bbox": [0.0, 0.0, 1.0, 1.0],
                    "score": 0.25}]
    assert type(out[0]["bbox"][0]) is float and type(out[0]["category_id"]) is int
    assert detections_to_coco_results(dets, [42, 43], {0: 5, 2: 6})[1]["category_id"] == 6
    with pytest.raises(AblateError, match="label"):
        detections_to_coco_results(dets, [42, 43], {0: 5})
    with pytest.raises(AblateError, match="image ids"):
        detections_to_coco_results(dets, [42], [1, 3, 7])


def test_build_coco_gt_round_trip():
    # GT arrays -> COCO, detections equal to the GT -> AP 1; a difficult box becomes a crowd.
    gts = [{"boxes": np.array([[10, 10, 50, 40], [100, 100, 300, 260.0]]),
            "labels": np.array([0, 1]), "difficult": np.array([False, True])},
           {"boxes": np.array([[5, 5, 25, 25.0]]), "labels": np.array([1])}]
    gt = build_coco_gt(gts, image_ids=[7, 8], category_names=["a", "b"], category_ids=[1, 3])
    assert isinstance(gt, COCO) and sorted(gt.getImgIds()) == [7, 8]
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[7]))
    assert ann[0]["bbox"] == [10.0, 10.0, 40.0, 30.0] and ann[0]["area"] == 1200.0
    assert [a["iscrowd"] for a in ann] == [0, 1] and ann[1]["category_id"] == 3
    dets = [{"boxes": g["boxes"], "scores": np.ones(len(g["boxes"])), "labels": g["labels"]}
            for g in gts]
    out = coco_eval(gt, detections_to_coco_results(dets, [7, 8], [1, 3]))
    assert out["stats"]["AP"] == pytest.approx(1.0) and set(out["per_category"]) == {"a", "b"}
