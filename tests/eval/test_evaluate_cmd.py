"""``ablate evaluate`` logic on a real (tiny) FashionScenes build: exact mAP values, VOC devkit
files == COCO-style JSON, COCO path == pycocotools, and every user error."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ablate.data.datasets.fashion_scenes import CLASSES, build_fashion_scenes
from ablate.data.datasets.voc import voc_ground_truth
from ablate.errors import AblateError
from ablate.eval.coco_map import STAT_NAMES
from ablate.eval.detections_io import write_voc_results
from ablate.eval.evaluate_cmd import evaluate, format_table
from ablate.eval.voc_map import voc_eval

T11 = np.arange(0.0, 1.1, 0.1)  # the devkit's 11 recall thresholds


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_fashion_scenes(tmp_path_factory.mktemp("eval") / "fs", num_train=4, num_test=20)


@pytest.fixture(scope="module")
def gt(root):
    return voc_ground_truth(root, "2007", "test", CLASSES)


def perfect(gts):
    """GT boxes as detections, score 1 (devkit coordinates)."""
    return [{"boxes": g["boxes"].copy(), "scores": np.ones(len(g["labels"])),
             "labels": g["labels"].copy()} for g in gts]


def write_devkit(folder: Path, ids, dets, names=CLASSES) -> Path:
    write_voc_results(folder, "test", names, ids, dets, coord_offset=0.0)
    return folder


def write_json(path: Path, ids, dets) -> Path:
    """Devkit boxes -> COCO-style results for VOC data (0-based continuous xywh)."""
    res = [{"image_id": int(i), "category_id": int(lab) + 1, "score": float(s),
            "bbox": [b[0] - 1, b[1] - 1, b[2] - b[0] + 1, b[3] - b[1] + 1]}
           for i, d in zip(ids, dets)
           for b, s, lab in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist())]
    path.write_text(json.dumps(res))
    return path


def npos(gts, c):
    return sum(int(((g["labels"] == c) & ~g["difficult"]).sum()) for g in gts)


def busiest_class(gts):
    return max(range(len(CLASSES)), key=lambda c: npos(gts, c))


def noisy(gts, seed=0):
    """Jittered GT (half-pixel steps), distinct 6-decimal scores, some false positives."""
    rng = np.random.default_rng(seed)
    dets, k = [], 0
    for g in gts:
        n = len(g["labels"]) + 2
        boxes = np.concatenate([g["boxes"], [[1, 1, 30, 30], [40, 10, 70, 50]]])
        boxes = boxes + rng.integers(-6, 7, boxes.shape) / 2
        labels = np.concatenate([g["labels"], rng.integers(0, len(CLASSES), 2)])
        scores = (rng.permutation(1000)[:n] + 1000 * k) / 1e6 + 0.5
        k += 1
        keep = rng.random(n) < 0.85
        dets.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return dets


def test_perfect_devkit_files_give_100(root, gt, tmp_path):
    ids, gts = gt
    folder = write_devkit(tmp_path / "det", ids, perfect(gts))
    for metric in ("voc07", "voc10", None):
        r = evaluate("voc", root, "test", folder, metric=metric)
        assert r["map"] == pytest.approx(100.0, abs=1e-9)
        assert all(v is None or v == pytest.approx(100.0, abs=1e-9)
                   for v in r["per_class"].values())
        assert list(r["per_class"]) == list(CLASSES)  # FashionScenes detected from its marker
        assert r["metric"] == (metric or "voc07") and r["data"] == "voc"
        assert r["num_images"] == 20 and r["missing_class_files"] == []
        assert r["num_detections"] == sum(len(g["labels"]) for g in gts)
    # root pointing at VOCdevkit itself works too
    assert evaluate("voc", root / "VOCdevkit", "test", folder)["map"] == pytest.approx(100.0)


def test_drop_half_of_one_class(root, gt, tmp_path):
    ids, gts = gt
    c = busiest_class(gts)
    n = npos(gts, c)
    assert n >= 2
    dets, seen = perfect(gts), 0
    for d, g in zip(dets, gts):
        drop = np.zeros(len(g["labels"]), bool)
        for j in np.flatnonzero((g["labels"] == c) & ~g["difficult"]):
            drop[j] = seen % 2 == 1  # drop every other one
            seen += 1
        for key in d:
            d[key] = d[key][~drop]
    kept = n - n // 2
    folder = write_devkit(tmp_path / "det", ids, dets)
    r07 = evaluate("voc", root, "test", folder, metric="voc07")
    r10 = evaluate("voc", root, "test", folder, metric="voc10")
    rec = kept / n  # precision stays 1
    assert r07["per_class"][CLASSES[c]] == pytest.approx(100 * (T11 <= rec).sum() / 11, abs=1e-12)
    assert r10["per_class"][CLASSES[c]] == pytest.approx(100 * rec, abs=1e-12)
    for metric, r in (("voc07", r07), ("voc2010", r10)):
        direct = voc_eval(gts, dets, len(CLASSES), metric=metric)
        assert [r["per_class"][k] for k in CLASSES] == [
            None if np.isnan(a) else a * 100 for a in direct["ap"]]
        assert r["map"] == direct["map"] * 100
        others = [v for k, v in r["per_class"].items() if k != CLASSES[c] and v is not None]
        assert others and all(v == pytest.approx(100.0, abs=1e-9) for v in others)


def test_duplicate_is_a_false_positive(root, gt, tmp_path):
    ids, gts = gt
    c = busiest_class(gts)
    n = npos(gts, c)
    assert n >= 3
    dets, k = [], 0
    for g in gts:  # class c: non-difficult GT only, distinct scores 1 - k/100
        keep = (g["labels"] != c) | ~g["difficult"]
        scores = np.ones(keep.sum())
        for j in np.flatnonzero(g["labels"][keep] == c):
            scores[j] = 1 - k / 100
            k += 1
        dets.append({"boxes": g["boxes"][keep], "scores": scores, "labels": g["labels"][keep]})
    first = next(i for i, d in enumerate(dets) if (d["labels"] == c).any())
    j = np.flatnonzero(dets[first]["labels"] == c)[0]  # the top-scored GT of class c
    d = dets[first]
    dets[first] = {"boxes": np.concatenate([d["boxes"], d["boxes"][j:j + 1] + 0.5]),
                   "scores": np.append(d["scores"], 0.995), "labels": np.append(d["labels"], c)}
    folder = write_devkit(tmp_path / "det", ids, dets)
    r07 = evaluate("voc", root, "test", folder, metric="voc07")
    r10 = evaluate("voc", root, "test", folder, metric="voc10")
    # Ranked TP, FP (duplicate), then n-1 TPs: precision 1 up to recall 1/n, then at most n/(n+1).
    m = (T11 <= 1 / n).sum()
    assert r07["per_class"][CLASSES[c]] == pytest.approx(
        100 * (m + (11 - m) * n / (n + 1)) / 11, abs=1e-12)
    assert r10["per_class"][CLASSES[c]] == pytest.approx(
        100 * (1 / n + (1 - 1 / n) * n / (n + 1)), abs=1e-12)
    assert r07["num_detections"] == sum(len(x["scores"]) for x in dets)
    direct = voc_eval(gts, dets, len(CLASSES), metric="voc07")
    assert r07["map"] == direct["map"] * 100


def test_voc_json_equals_devkit_files(root, gt, tmp_path):
    ids, gts = gt
    dets = noisy(gts)
    folder = write_devkit(tmp_path / "det", ids, dets)
    path = write_json(tmp_path / "det.json", ids, dets)
    for metric in ("voc07", "voc10", "coco"):
        a = evaluate("voc", root, "test", folder, metric=metric)
        b = evaluate("voc", root, "test", path, metric=metric)
        assert a["per_class"] == b["per_class"] and a["map"] == b["map"]
        assert a.get("stats") == b.get("stats")
        assert a["num_detections"] == b["num_detections"] == sum(len(d["scores"]) for d in dets)
        assert 0 < a["map"] < 100
    direct = voc_eval(gts, dets, len(CLASSES), metric="voc07")
    assert evaluate("voc", root, "test", path)["map"] == direct["map"] * 100


def _coco_results(root, seed=0):
    rng = np.random.default_rng(seed)
    anns = json.loads((root / "annotations" / "instances_test.json").read_text())["annotations"]
    res = [{"image_id": a["image_id"], "category_id": a["category_id"],
            "bbox": (np.array(a["bbox"]) + rng.normal(0, 2, 4)).tolist(),
            "score": float(rng.random())} for a in anns]
    res += [{"image_id": a["image_id"], "category_id": int(rng.integers(1, 11)),
             "bbox": [5.0, 5.0, 30.0, 40.0], "score": float(rng.random())} for a in anns[::3]]
    return res


def _direct_stats(ann_file, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return {k: (None if v < 0 else v * 100) for k, v in zip(STAT_NAMES, ev.stats)}


def test_coco_path_equals_pycocotools(root, tmp_path):
    res = _coco_results(root)
    path = tmp_path / "res.json"
    path.write_text(json.dumps(res))
    r = evaluate("coco", root, "test", path)
    direct = _direct_stats(root / "annotations" / "instances_test.json", res)
    assert evaluate("coco", root, "test", path, coco_backend="pycocotools")["stats"] == direct
    assert r["stats"].keys() == direct.keys()
    for k, v in direct.items():  # percent; None = no GT in that area range
        assert (r["stats"][k] is None) if v is None else abs(r["stats"][k] - v) <= 1e-13, k
    with pytest.raises(AblateError, match="did you mean 'pycocotools'"):
        evaluate("coco", root, "test", path, coco_backend="pycocotool")
    assert r["map"] == r["stats"]["AP"] and 0 < r["map"] < 100
    assert r["metric"] == "coco" and r["num_images"] == 20 and r["num_detections"] == len(res)
    assert list(r["per_class"]) == list(CLASSES)


def test_voc_coco_metric_equals_coco_with_difficult_as_crowd(root, gt, tmp_path):
    # VOC GT converted to COCO == the build's COCO json with iscrowd = difficult, area = w*h.
    ids, gts = gt
    dets = noisy(gts, seed=1)
    a = evaluate("voc", root, "test", write_devkit(tmp_path / "det", ids, dets), metric="coco")
    coco = json.loads((root / "annotations" / "instances_test.json").read_text())
    for ann in coco["annotations"]:
        ann["iscrowd"], ann["area"] = ann["difficult"], ann["bbox"][2] * ann["bbox"][3]
    (tmp_path / "c" / "annotations").mkdir(parents=True)
    (tmp_path / "c" / "annotations" / "instances_test.json").write_text(json.dumps(coco))
    b = evaluate("coco", tmp_path / "c", "test", write_json(tmp_path / "d.json", ids, dets))
    assert a["stats"] == b["stats"] and a["per_class"] == b["per_class"]
    perfect_r = evaluate("voc", root, "test", write_devkit(tmp_path / "p", ids, perfect(gts)),
                         metric="coco")
    assert perfect_r["map"] == pytest.approx(100.0, abs=1e-9)


def test_class_names_override_missing_file_and_default(root, gt, tmp_path):
    ids, gts = gt
    folder = write_devkit(tmp_path / "det", ids, perfect(gts))
    r = evaluate("voc", root, "test", folder, class_names=[*CLASSES, "extra"])
    assert r["per_class"]["extra"] is None and r["missing_class_files"] == ["extra"]
    assert r["map"] == pytest.approx(100.0, abs=1e-9)
    (folder / f"comp4_det_test_{CLASSES[0]}.txt").unlink()
    r = evaluate("voc", root, "test", folder)
    assert r["per_class"][CLASSES[0]] == 0.0 and r["missing_class_files"] == [CLASSES[0]]
    assert "no results file (AP 0) for: t-shirt" in format_table(r)
    # Without the FashionScenes marker the 20 VOC classes are assumed.
    plain = tmp_path / "plain"
    shutil.copytree(root / "VOCdevkit", plain / "VOCdevkit")
    with pytest.raises(AblateError, match="unknown class"):
        evaluate("voc", plain, "test", folder)


def test_format_table_and_json(root, gt, tmp_path):
    ids, gts = gt
    r = evaluate("voc", root, "test", write_devkit(tmp_path / "det", ids, noisy(gts)))
    text = format_table(r)
    lines = text.splitlines()
    assert lines[0].startswith("| class") and lines[1].startswith("|---")
    assert sum(line.startswith("| ") for line in lines) == 1 + len(CLASSES)
    assert f"{r['map']:.2f}" in lines[-1] and lines[-1].startswith("mAP (voc07, voc test, 20")
    assert json.loads(json.dumps(r, indent=2, allow_nan=False)) == r
    path = tmp_path / "res.json"
    path.write_text(json.dumps(_coco_results(root)))
    rc = evaluate("coco", root, "test", path)
    assert "AP50 " in format_table(rc) and json.dumps(rc, allow_nan=False)


def test_errors(root, gt, tmp_path):
    ids, gts = gt
    folder = write_devkit(tmp_path / "det", ids, perfect(gts))
    jpath = write_json(tmp_path / "det.json", ids, perfect(gts))

    def err(match, *args, **kw):
        with pytest.raises(AblateError, match=match):
            evaluate(*args, **kw)

    err(r"nope.*Expected layout", "voc", tmp_path / "nope", "test", folder)
    err(r"val\.txt does not exist.*Expected layout", "voc", root, "val", folder)
    err(r"nope.*Expected layout", "coco", tmp_path / "nope", "test", jpath)
    err(r"instances_val\.json does not exist", "coco", root, "val", jpath)
    err(r"detections not found: .*missing", "voc", root, "test", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    err(r"empty: no results file comp4_det_test_<class>\.txt", "voc", root, "test",
        tmp_path / "empty")
    write_devkit(tmp_path / "other", ids, perfect(gts))
    for p in (tmp_path / "other").iterdir():
        p.rename(p.with_name(p.name.replace("_test_", "_val_")))
    err(r"another --split", "voc", root, "test", tmp_path / "other")
    err(r"unknown metric 'voc7' \(did you mean 'voc07'\?\)", "voc", root, "test", folder,
        metric="voc7")
    err(r"unknown data 'vco' \(did you mean 'voc'\?\)", "vco", root, "test", folder)
    err(r"needs VOC-layout data", "coco", root, "test", jpath, metric="voc07")
    # class name in a file name that is not a class
    bad = write_devkit(tmp_path / "bad", ids, perfect(gts))
    (bad / "comp4_det_test_tshirt.txt").write_text("")
    err(r"comp4_det_test_tshirt\.txt names class 'tshirt' \(did you mean 't-shirt'\?\)",
        "voc", root, "test", bad)
    # image ids outside the split (train ids 000001..000004), devkit and JSON
    wrong = write_devkit(tmp_path / "wrong", ["000001", "000002"], perfect(gts[:2]))
    err(r"2 image ids that are not in split 'test'.*'000001', '000002'", "voc", root, "test",
        wrong)
    err(r"det_wrong\.json: detections mention 1 image ids.* 3\b", "voc", root, "test",
        write_json(tmp_path / "det_wrong.json", ["000003"], perfect(gts[:1])))
    res = json.loads(jpath.read_text())
    (tmp_path / "cat.json").write_text(json.dumps([{**res[0], "category_id": 11}]))
    err(r"cat\.json: category_id 11 outside 1\.\.10", "voc", root, "test", tmp_path / "cat.json")
    err(r"unknown category_id \[11\]", "coco", root, "test", tmp_path / "cat.json")
    err(r"is a folder; --data coco expects", "coco", root, "test", folder)
    (tmp_path / "img.json").write_text(json.dumps([{**res[0], "image_id": 1}]))
    err(r"img\.json: detections mention 1 image ids that are not in split 'test'.*e\.g\. 1",
        "coco", root, "test", tmp_path / "img.json")
    (tmp_path / "broken.json").write_text("[{")
    err(r"broken\.json: invalid JSON", "voc", root, "test", tmp_path / "broken.json")
