"""The `sniper` command line: bad input and unusable paths give one line on stderr naming the file
and the entry, a non-zero exit, no output file and no planning; the rest keeps working."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sniper_ext.cli.chips
from sniper_ext import cli
from sniper_ext.chips import ChipDB
from sniper_ext.data import synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _coco(*extra_anns):
    return {
        "images": [
            {"id": 17, "width": 640, "height": 480, "file_name": "a.png"},
            {"id": 18, "width": 320, "height": 240, "file_name": "b.png"},
        ],
        "annotations": [
            {"id": 1, "image_id": 17, "bbox": [10, 10, 50, 40], "category_id": 1},
            {"id": 2, "image_id": 18, "bbox": [100, 50, 120, 90], "category_id": 1},
            *extra_anns,
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def _ann(bbox, image_id=17, ann_id=4):
    return {"id": ann_id, "image_id": image_id, "bbox": bbox, "category_id": 1}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with good annotations; the command runs in it, and planning fails the test
    (errors must come before the long work)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ann.json").write_text(json.dumps(_coco()))

    def no_planning(*a, **k):
        raise AssertionError("planning started before the inputs and outputs were checked")

    monkeypatch.setattr(sniper_ext.cli.chips, "plan_dataset", no_planning)
    return tmp_path


def _run_error(capsys, argv, *fragments, code=1):
    """Runs the CLI expecting a one-line error that contains every fragment."""
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == code, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sniper {argv[0]}: error: ") if argv else True
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert "Traceback" not in err
    return lines[0]


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# -- inputs that are not (valid) JSON or not COCO ------------------------------------------------


@pytest.mark.parametrize(
    "text,fragments",
    [
        ('{"images": [\n', ["bad.json: line 2, column 1: not valid JSON"]),
        ("[]", ["bad.json: not a COCO annotations file: the top level is a list"]),
        ('{"foo": 1}', ['bad.json: not a COCO annotations file: no "images" or "annotations"']),
        ('{"images": [], "annotations": []}', ['bad.json: no images (the "images" list is empty)']),
        (
            '{"images": [{"id": 17, "width": 640}], "annotations": []}',
            ["bad.json: image 17: height must be a positive integer"],
        ),
    ],
)
def test_bad_annotation_files(work, capsys, text, fragments):
    (work / "bad.json").write_text(text)
    line = _run_error(capsys, ["chips", "bad.json", "--out", "o/db.npz", "--quiet"], *fragments)
    assert "--skip-bad" not in line  # not skippable
    assert _files(work) == ["ann.json", "bad.json"]


def test_annotations_path_is_a_directory_or_missing(work, capsys):
    (work / "d").mkdir()
    _run_error(capsys, ["chips", "d", "--out", "o/db.npz"], "d: Is a directory")
    _run_error(capsys, ["chips", "nope.json", "--out", "o/db.npz"], "nope.json: No such file or directory")
    assert _files(work) == ["ann.json"]


# -- bad entries: named by file, image and annotation id; skippable only with --skip-bad -----------


@pytest.mark.parametrize(
    "ann,fragments",
    [
        (_ann([10, 10, -3, 5]), ["ann.json: image 17, annotation 4: box has negative width (w=-3.0)"]),
        (
            _ann([10, float("nan"), 3, 5]),
            ["ann.json: image 17, annotation 4: box is not finite (bbox=[10, NaN, 3, 5])"],
        ),
        (_ann([700, 10, 30, 5]), ["ann.json: image 17, annotation 4: box lies entirely outside its 640x480 image"]),
        (_ann([630, 10, 30, 5]), ["ann.json: image 17, annotation 4: box extends outside its 640x480 image"]),
        (_ann([10, 10, 0, 5]), ["ann.json: image 17, annotation 4: box has zero width"]),
        (_ann([10, 10, 3, 5], image_id=99), ["ann.json: annotation 4: unknown image id 99"]),
    ],
)
def test_bad_annotations(work, capsys, ann, fragments):
    (work / "ann.json").write_text(json.dumps(_coco(ann)))
    line = _run_error(capsys, ["chips", "ann.json", "--out", "o/db.npz", "--quiet"], *fragments)
    assert line.endswith("(--skip-bad skips or repairs such entries)")
    assert _files(work) == ["ann.json"]


@pytest.mark.parametrize(
    "props,fragments",
    [
        ("[{", ["p.json: line 1, column 3: not valid JSON"]),
        ('"boxes"', ["p.json: not a proposals file: the top level is a string"]),
        (json.dumps({"99": [[1, 1, 5, 5]]}), ["p.json: image 99: unknown image id 99"]),
        (
            json.dumps({"17": [[10, 10, 5, 20]]}),
            ["p.json: image 17, proposal 0: box has negative width (x1=10.0, x2=5.0)"],
        ),
        (
            json.dumps([{"image_id": 18, "bbox": [10, 10, 5, 900]}]),
            ["p.json: image 18, results[0]: box extends outside its 320x240"],
        ),
    ],
)
def test_bad_proposals(work, capsys, props, fragments):
    (work / "p.json").write_text(props)
    _run_error(capsys, ["chips", "ann.json", "--proposals", "p.json", "--out", "o/db.npz"], *fragments)
    assert _files(work) == ["ann.json", "p.json"]


def test_missing_proposals_file(work, capsys, monkeypatch):
    def no_reading(*a, **k):
        raise AssertionError("annotations read before the proposals file was found missing")

    monkeypatch.setattr(sniper_ext.cli.chips, "load_coco", no_reading)
    _run_error(
        capsys,
        ["chips", "ann.json", "--proposals", "none.json", "--out", "o/db.npz"],
        "none.json: No such file or directory",
    )
    (work / "d").mkdir()
    _run_error(capsys, ["chips", "ann.json", "--proposals", "d", "--out", "o/db.npz"], "d: Is a directory")
    assert _files(work) == ["ann.json"]


def test_skip_bad_counts_by_kind(tmp_path, capsys):
    coco = _coco(
        _ann([630, 10, 30, 5], ann_id=4),
        _ann([-5, 400, 20, 200], ann_id=5),  # clipped twice
        _ann([10, 10, -3, 5], ann_id=6),
        _ann([10, 10, 0, 5], ann_id=7),
        _ann([10, 10, 3, 5], image_id=99, ann_id=8),
        _ann([1000, 10, 3, 5], image_id=18, ann_id=9),
    )
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "p.json").write_text(json.dumps({"17": [[1, 1, 30, 30], [5, 5, 5, 9]], "99": [[1, 1, 5, 5]]}))
    out = tmp_path / "db.npz"
    rc = cli.main(
        [
            "chips",
            str(tmp_path / "ann.json"),
            "--proposals",
            str(tmp_path / "p.json"),
            "--out",
            str(out),
            "--skip-bad",
            "--quiet",
        ]
    )
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    lines = err.splitlines()
    assert lines[0] == "sniper chips: --skip-bad: skipped or repaired 8 entries"
    counts = {line.split(" x ")[1].split(" (first")[0]: int(line.split(" x ")[0]) for line in lines[1:]}
    assert counts == {
        "annotation with a box partly outside its image: clipped": 2,
        "annotation with a negative width or height: skipped": 1,
        "annotation with a zero-size box: skipped": 1,
        "annotation of an unknown image: skipped": 1,
        "annotation with a box entirely outside its image: skipped": 1,
        "proposal with a zero-size box: skipped": 1,
        "proposal of an unknown image: skipped": 1,
    }
    assert "(first: " + str(tmp_path / "ann.json") + ": image 17, annotation 4)" in err
    db = ChipDB.load(out)
    # Planned: the two good boxes and the two clipped ones (image 17: annotations 1, 4, 5; image 18: 2).
    valid = {
        (int(db.chip_image[c]), int(i))
        for c in range(len(db))
        for i, v in zip(db.chip_gt(c)["index"], db.chip_gt(c)["valid"])
        if v
    }
    assert valid == {(0, 0), (0, 1), (0, 2), (1, 0)}
    assert "valid GT assigned to chips" in stdout
    # Nothing to skip: said so.
    rc = cli.main(["chips", "--synthetic-images", "3", "--skip-bad", "--out", "", "--quiet"])
    assert rc == 0 and capsys.readouterr().err == "sniper chips: --skip-bad: nothing to skip or repair\n"


# -- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--stride", "0"], "argument --stride: must be a positive integer, got 0"),
        (["--chip-size", "0"], "argument --chip-size: must be a positive integer, got 0"),
        (["--negatives-per-image", "-1"], "argument --negatives-per-image: must be a non-negative integer, got -1"),
        (["--stride", "512"], "argument --stride: must be smaller than --chip-size (512 >= 512)"),
        (["--stride", "x"], "argument --stride: must be an integer, got 'x'"),
        (["--limit", "-2"], "argument --limit: must be a non-negative integer"),
        (["--order-seed", "-1"], "argument --order-seed: must be a non-negative integer"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options(work, capsys, argv, fragment):
    line = _run_error(capsys, ["chips", "ann.json", "--out", "o/db.npz", *argv], fragment, code=2)
    assert line.endswith("(see 'sniper chips --help')")
    assert _files(work) == ["ann.json"]


# -- output paths and folders, checked before anything is read or planned --------------------------


def test_out_under_a_file_or_a_directory(work, capsys):
    _run_error(
        capsys,
        ["chips", "ann.json", "--out", "ann.json/db.npz"],
        "--out ann.json/db.npz: ",
        f"{work / 'ann.json'} is not a directory",
    )
    (work / "d").mkdir()
    _run_error(capsys, ["chips", "ann.json", "--out", "d"], "--out d: is a directory")
    _run_error(capsys, ["chips", "ann.json", "--viz", "ann.json"], "--viz ann.json: exists and is not a directory")
    _run_error(capsys, ["chips", "ann.json", "--viz", "ann.json/sub"], "--viz ann.json/sub: ", "is not a directory")
    assert _files(work) == ["ann.json"] and os.listdir(work / "d") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(work, capsys):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _run_error(
            capsys,
            ["chips", "ann.json", "--out", "ro/sub/db.npz"],
            "--out ro/sub/db.npz: cannot write in",
            "Permission denied",
        )
        _run_error(capsys, ["chips", "ann.json", "--viz", "ro/viz"], "--viz ro/viz: cannot write in")
    finally:
        ro.chmod(0o755)
    assert _files(work) == ["ann.json"]


def test_out_where_nothing_can_be_written(work, capsys, monkeypatch):
    """Also for root: a folder where creating a file fails (the probe is what decides)."""
    import tempfile

    real = tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        if dir is not None and os.path.abspath(dir) == str(work / "locked"):
            raise PermissionError(13, "Permission denied", dir)
        return real(*a, dir=dir, **k)

    (work / "locked").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    _run_error(
        capsys,
        ["chips", "ann.json", "--out", "locked/db.npz"],
        f"--out locked/db.npz: cannot write in {work / 'locked'} (Permission denied)",
    )
    _run_error(capsys, ["nms-demo", "--out", "locked/pictures"], "--out locked/pictures: cannot write in")
    assert _files(work) == ["ann.json"]


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs /sys")
def test_out_where_even_root_cannot_write(work, capsys):
    """sysfs refuses new files, to root too (read-only mount or EACCES): the real thing."""
    import tempfile

    try:
        fd, p = tempfile.mkstemp(dir="/sys")
        os.close(fd)
        os.unlink(p)
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    _run_error(
        capsys, ["chips", "ann.json", "--out", "/sys/sniper/db.npz"], "--out /sys/sniper/db.npz: cannot write in /sys"
    )


def test_images_folder_missing(work, capsys):
    _run_error(capsys, ["chips", "ann.json", "--images", "pics", "--viz", "v"], "--images pics: no such directory")
    _run_error(capsys, ["chips", "ann.json", "--images", "ann.json"], "--images ann.json: is not a directory")
    (work / "pics").mkdir()
    _run_error(
        capsys,
        ["chips", "ann.json", "--images", "pics", "--viz", "v"],
        "--images pics: no image file 'a.png' for image 17 (drawn by --viz)",
    )
    assert _files(work) == ["ann.json"]


def test_draws_on_the_real_images(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (640, 480), (0, 0, 0)).save(tmp_path / "pics" / "a.png")
    Image.new("RGB", (320, 240), (0, 0, 0)).save(tmp_path / "pics" / "b.png")
    (tmp_path / "ann.json").write_text(json.dumps(_coco()))
    rc = cli.main(
        [
            "chips",
            str(tmp_path / "ann.json"),
            "--images",
            str(tmp_path / "pics"),
            "--viz",
            str(tmp_path / "viz"),
            "--out",
            str(tmp_path / "db.npz"),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with Image.open(tmp_path / "viz" / "chips_17.png") as im:
        dark = np.asarray(im.convert("L")) < 50
    assert dark.mean() > 0.3  # drawn over the black image, not a white canvas
    (tmp_path / "pics" / "b.png").write_text("not a png")
    rc = cli.main(
        [
            "chips",
            str(tmp_path / "ann.json"),
            "--images",
            str(tmp_path / "pics"),
            "--viz",
            str(tmp_path / "viz"),
            "--out",
            str(tmp_path / "db.npz"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.splitlines()
    assert rc == 1 and len(err) == 1 and "b.png: image 18: cannot decode the image" in err[0] and "--viz" in err[0]


# -- files, help, progress, and what must keep working ----------------------------------------------


def test_written_files_follow_the_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        rc = cli.main(
            [
                "chips",
                "--synthetic-images",
                "4",
                "--quiet",
                "--out",
                str(tmp_path / "db.npz"),
                "--viz",
                str(tmp_path / "viz"),
                "--num-viz",
                "1",
            ]
        )
    finally:
        os.umask(old)
    assert rc == 0
    assert (tmp_path / "db.npz").stat().st_mode & 0o777 == 0o640
    (png,) = os.listdir(tmp_path / "viz")
    assert (tmp_path / "viz" / png).stat().st_mode & 0o777 == 0o640


def test_help_shows_every_default(capsys):
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sorted(subs.choices) == ["chips", "demo", "detect", "eval", "export", "infer", "info", "nms-demo", "train"]
    for name, sub in subs.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.dest == "help":
                continue
            text = formatter._get_help_string(action)
            assert action.help and "default" in text, (name, action.dest, text)
        assert cli.main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "exit status: 0 done; 1 bad input data" in out
    cli.main(["chips", "--help"])
    out = capsys.readouterr().out
    for fragment in (
        "(default: 512)",
        "(default: 32)",
        "(default: 2)",
        "(default: sniper_out/chips.npz)",
        "(default: off",
        "(default: the embedded synthetic dataset)",
    ):
        assert fragment in " ".join(out.split()), fragment


def test_no_command_lists_the_commands(capsys):
    assert cli.main([]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for name in ("chips", "info", "demo", "nms-demo", "train", "eval"):
        assert f"    {name} " in out
    assert cli.main(["frob"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("sniper: error: argument COMMAND: invalid choice: 'frob'")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    argv = ["chips", "--synthetic-images", "5", "--out", str(tmp_path / "db.npz")]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert cli.main(argv) == 0
    assert "planning chips" in sys.stderr.getvalue() and "5/5" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert cli.main([*argv, "--quiet"]) == 0
    assert sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert cli.main(argv) == 0
    assert sys.stderr.getvalue() == ""
    assert "valid GT assigned to chips" in capsys.readouterr().out  # the summary still ends the run


def test_internal_errors_keep_their_traceback(work, monkeypatch):
    def bug(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sniper_ext.cli.chips, "plan_dataset", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["chips", "ann.json", "--out", "o/db.npz", "--quiet"])

    def os_bug(*a, **k):
        raise OSError("no file involved")

    monkeypatch.setattr(sniper_ext.cli.chips, "plan_dataset", os_bug)
    with pytest.raises(OSError, match="no file involved"):
        cli.main(["chips", "ann.json", "--out", "o/db.npz", "--quiet"])


def test_ci_commands_still_work(tmp_path, capsys):
    rc = cli.main(
        [
            "chips",
            "--synthetic-images",
            "30",
            "--quiet",
            "--out",
            str(tmp_path / "db.npz"),
            "--viz",
            str(tmp_path / "viz"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and len(os.listdir(tmp_path / "viz")) == 4 and len(ChipDB.load(tmp_path / "db.npz")) > 0
    assert "pixels vs single-scale 800x1333" in out
    rc = cli.main(["nms-demo", "--images", "5", "--out", str(tmp_path / "demo")])
    assert rc == 0 and os.listdir(tmp_path / "demo") == ["soft_nms_demo.png"]


def test_same_plan_from_a_file_as_from_the_synthetic_set(tmp_path, capsys):
    coco, props = synthetic_coco(12, seed=6)
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "p.json").write_text(json.dumps({str(k): v.tolist() for k, v in props.items()}))
    assert (
        cli.main(
            [
                "chips",
                str(tmp_path / "ann.json"),
                "--proposals",
                str(tmp_path / "p.json"),
                "--out",
                str(tmp_path / "a.npz"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        cli.main(["chips", "--synthetic-images", "12", "--seed", "6", "--out", str(tmp_path / "b.npz"), "--quiet"]) == 0
    )
    a, b = ChipDB.load(tmp_path / "a.npz"), ChipDB.load(tmp_path / "b.npz")
    for k in ChipDB._ARRAYS:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_entry_point_in_a_subprocess(tmp_path):
    """The real process: exit code, one stderr line, no traceback."""
    (tmp_path / "bad.json").write_text("{")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sniper_ext.cli",
            "chips",
            str(tmp_path / "bad.json"),
            "--out",
            str(tmp_path / "db.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert (
        r.stderr == f"sniper chips: error: {tmp_path / 'bad.json'}: line 1, column 2: not valid JSON "
        "(Expecting property name enclosed in double quotes)\n"
    )
    assert os.listdir(tmp_path) == ["bad.json"]
