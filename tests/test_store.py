"""Policy store: publish/load round trip, versions, promotion, refusals, concurrency, CLI.

Real files on disk and a real ONNX graph (y = x + 1) opened by onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dexstack import contract
from dexstack.cli.store import app as store_cli
from dexstack.hardware.profiles import PANDA
from dexstack.manifest import ManifestError
from dexstack.store import PolicyRejected, PolicyStore, file_checksums


@pytest.fixture(autouse=True)
def no_bundled_store(monkeypatch) -> None:
    # The repo ships policies in policy_store/; these tests control exactly what the store holds.
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")


def write_add_one_onnx(path: Path) -> None:
    """A real ONNX graph: y = x + 1 for x of shape (1, 8) float32."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # readable by any recent onnxruntime
    save(model, str(path))


def make_export(
    directory: Path,
    *,
    name: str | None = "add_one",
    joint_names: list[str] | None = None,
    schema_version: int = 2,
    family: str = "bc",
    checksums: bool = True,
) -> Path:
    """An export dir as a trainer writes it: manifest.json (no version; with the sha256 of every
    file unless `checksums` is False, as exports made before row 11 were) + graph + stats."""
    joints = list(PANDA.joint_names)
    directory.mkdir(parents=True, exist_ok=True)
    write_add_one_onnx(directory / "policy.onnx")
    (directory / "stats").mkdir(exist_ok=True)
    (directory / "stats" / "norm.json").write_text(json.dumps({"mean": [0.0] * 8}))
    manifest = {
        "schema_version": schema_version,
        "family": family,
        "robot_profile": "panda",
        "graphs": {"policy": "policy.onnx"},
        "inputs": [
            {
                "name": contract.JOINT_POSITIONS,
                "kind": "joint_positions",
                "source": contract.JOINT_STATES,
                "names": joints,
                "shape": [8],
                "dtype": "float32",
            },
            {
                "name": contract.rgb_key("scene"),
                "kind": "rgb",
                "source": contract.camera_color_topic("scene"),
                "shape": [96, 96, 3],
                "dtype": "uint8",
                "normalization": {"type": "scale", "scale": 1 / 255},
            },
        ],
        "outputs": {"kind": "joint_position_chunk", "joint_names": joint_names or joints, "chunk_length": 8, "dt": 0.1},
        "provenance": {
            "code_commit": "test",
            "dataset_hash": "none",
            "config": {},
            "training_time_s": 0.0,
            "created": "2025-01-01T00:00:00+00:00",
        },
    }
    if name is not None:
        manifest["name"] = name
    if schema_version >= 2:
        for spec, age in zip(manifest["inputs"], (0.1, 0.25), strict=True):
            spec["max_age_s"] = age
    if checksums:
        manifest["files"] = file_checksums(directory)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_publish_load_round_trip(dexstack_home, tmp_path) -> None:
    src = make_export(tmp_path / "export")
    store = PolicyStore()
    assert store.root == Path(dexstack_home) / "policies"

    published = store.publish(src)
    assert (published.name, published.version) == ("add_one", "1")
    assert published.path == store.root / "add_one" / "1"

    before = snapshot(published.path)
    loaded = store.load("add_one", PANDA)
    assert snapshot(published.path) == before  # loading reads only
    assert loaded.path == published.path
    assert loaded.manifest_sha256 == hashlib.sha256((loaded.path / "manifest.json").read_bytes()).hexdigest()
    m = loaded.manifest
    assert (m["name"], m["version"], m["evaluation"]) == ("add_one", "1", {})
    for rel in ("policy.onnx", "stats/norm.json"):
        data = (src / rel).read_bytes()
        assert (loaded.path / rel).read_bytes() == data
        assert m["files"][rel] == hashlib.sha256(data).hexdigest()
    assert set(m["files"]) == {"policy.onnx", "stats/norm.json"}

    import onnxruntime

    session = onnxruntime.InferenceSession(str(loaded.path / m["graphs"]["policy"]), providers=["CPUExecutionProvider"])
    x = np.arange(8, dtype=np.float32)[None]
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x + 1)
    assert store.verify("add_one@1", deep=True).manifest == m


def test_versions_increase_promote_and_refs(dexstack_home, tmp_path) -> None:
    store = PolicyStore()
    src = make_export(tmp_path / "export")
    assert [store.publish(src).version for _ in range(3)] == ["1", "2", "3"]
    assert store.publish(src, name="other").version == "1"  # numbering is per name

    assert store.resolve("add_one") == store.root / "add_one" / "3"  # nothing promoted: the highest
    store.promote("add_one@2")
    assert (store.root / "add_one" / "PROMOTED").read_text().strip() == "2"
    assert store.resolve("add_one") == store.root / "add_one" / "2"
    assert store.load("add_one", PANDA).version == "2"
    assert store.load("add_one@1", PANDA).version == "1"
    assert store.publish(src).version == "4"  # publishing does not move the promotion
    assert store.resolve("add_one").name == "2"

    rows = store.list()
    assert [(r["name"], r["version"], r["promoted"]) for r in rows] == [
        ("add_one", "1", False),
        ("add_one", "2", True),
        ("add_one", "3", False),
        ("add_one", "4", False),
        ("other", "1", False),
    ]
    assert all(r["family"] == "bc" and r["source"] == "local" and r["created"].startswith("2025") for r in rows)

    with pytest.raises(PolicyRejected, match="policy 'add_one' has no version '9'; versions: 1, 2, 3, 4"):
        store.resolve("add_one@9")
    with pytest.raises(PolicyRejected, match="no policy named 'nope' .*available: add_one, other"):
        store.load("nope", PANDA)
    with pytest.raises(PolicyRejected, match="bad policy reference 'add_one@v2'"):
        store.resolve("add_one@v2")
    with pytest.raises(PolicyRejected, match="promote needs NAME@VERSION"):
        store.promote("add_one")


def corrupt_flip_bytes(version_dir: Path) -> None:
    path = version_dir / "policy.onnx"
    data = bytearray(path.read_bytes())
    for i in range(10, len(data), 17):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_truncate(version_dir: Path) -> None:
    path = version_dir / "policy.onnx"
    path.write_bytes(path.read_bytes()[:20])


def corrupt_manifest_checksum(version_dir: Path) -> None:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["files"]["stats/norm.json"] = "0" * 64
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def remove_file(version_dir: Path) -> None:
    (version_dir / "stats" / "norm.json").unlink()


def add_extra_file(version_dir: Path) -> None:
    (version_dir / "notes.txt").write_text("not listed")


def rename_output_joint(version_dir: Path) -> None:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["outputs"]["joint_names"][6] = "panda_jointX"
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def break_manifest_json(version_dir: Path) -> None:
    (version_dir / "manifest.json").write_text('{"schema_version": 1')


REFUSALS = [
    (
        corrupt_flip_bytes,
        r"policy add_one@2: checksum mismatch for policy.onnx: the manifest lists sha256 [0-9a-f]{64}, "
        r"the file has [0-9a-f]{64} \(corrupted or modified after publishing\)",
    ),
    (corrupt_truncate, "policy add_one@2: checksum mismatch for policy.onnx"),
    (
        corrupt_manifest_checksum,
        "policy add_one@2: checksum mismatch for stats/norm.json: the manifest lists sha256 "
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (remove_file, r"policy add_one@2: file\(s\) listed in the manifest are missing: \['stats/norm.json'\]"),
    (add_extra_file, r"policy add_one@2: unlisted file\(s\) in .*: \['notes.txt'\]; every file"),
    (
        rename_output_joint,
        "policy add_one@2 does not fit robot profile 'panda': output joint 'panda_jointX' is not a "
        "joint of robot profile 'panda' \\(joints: panda_joint1",
    ),
    (break_manifest_json, "policy add_one@2: manifest.json is not valid JSON"),
]


@pytest.mark.parametrize(("damage", "message"), REFUSALS, ids=[d.__name__ for d, _ in REFUSALS])
def test_damaged_version_is_refused_and_previous_still_loads(dexstack_home, tmp_path, damage, message) -> None:
    store = PolicyStore()
    src = make_export(tmp_path / "export")
    good = store.load(store.publish(src).name, PANDA)
    bad_dir = store.publish(src).path
    damage(bad_dir)
    for attempt in (
        lambda: store.load("add_one@2", PANDA),
        lambda: store.load("add_one", PANDA),
        lambda: store.verify("add_one@2", PANDA, deep=True),
    ):
        with pytest.raises(PolicyRejected, match=message):
            attempt()
    assert store.load("add_one@1", PANDA) == good  # the version a node was serving is unaffected
    with pytest.raises(PolicyRejected):
        store.promote("add_one@2", PANDA)  # a damaged version cannot be promoted either
    assert not (store.root / "add_one" / "PROMOTED").exists()


def test_deep_verify_opens_graphs_with_onnxruntime(dexstack_home, tmp_path) -> None:
    # Checksums hold (the stored graph and its manifest checksum replaced by hand), but the graph
    # is not ONNX: only --deep notices.
    store = PolicyStore()
    version = store.publish(make_export(tmp_path / "export")).path
    garbage = b"this is not an onnx protobuf" * 10
    (version / "policy.onnx").write_bytes(garbage)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["files"]["policy.onnx"] = hashlib.sha256(garbage).hexdigest()
    (version / "manifest.json").write_text(json.dumps(manifest))
    assert store.verify("add_one").version == "1"
    with pytest.raises(
        PolicyRejected, match=r"policy add_one@1: onnxruntime cannot open graph 'policy' \(policy.onnx\)"
    ):
        store.verify("add_one", deep=True)


def test_bad_publish_is_refused_and_leaves_nothing(dexstack_home, tmp_path) -> None:
    store = PolicyStore()
    bad_joint = make_export(tmp_path / "bad_joint", joint_names=[*PANDA.joint_names[:7], "panda_jointX"])
    with pytest.raises(ManifestError, match=r"bad_joint/manifest.json: output joint 'panda_jointX' is not a joint"):
        store.publish(bad_joint, profile=PANDA)

    unnamed = make_export(tmp_path / "unnamed", name=None)
    with pytest.raises(ManifestError, match=r"policy name None is missing or invalid: pass a name \(--name\)"):
        store.publish(unnamed)
    with pytest.raises(ManifestError, match="policy name '../x' is missing or invalid"):
        store.publish(unnamed, name="../x")

    copied = make_export(tmp_path / "copied")
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["files"] = {"policy.onnx": "1" * 64, "stats/norm.json": "2" * 64}
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"checksum mismatch for \['policy.onnx', 'stats/norm.json'\]"):
        store.publish(copied)

    with pytest.raises(ManifestError, match="not a directory"):
        store.publish(tmp_path / "absent")
    # Nothing half-written: no version, no temp dir.
    assert (
        not store.root.exists() or [p for p in store.root.rglob("*") if p.is_file() or p.name.startswith(".tmp")] == []
    )
    assert store.list() == []
    assert store.publish(unnamed, name="named").version == "1"
    # The store knows no robots: without a profile only the structure is checked; the fit is
    # checked wherever a profile is given (load, verify, and the CLI passes the manifest's).
    unchecked = store.publish(bad_joint)
    assert store.verify(f"{unchecked.name}@{unchecked.version}").version == unchecked.version
    with pytest.raises(PolicyRejected, match="does not fit robot profile 'panda': output joint 'panda_jointX'"):
        store.load(f"{unchecked.name}@{unchecked.version}", PANDA)


def corrupt_random_bytes(version_dir: Path) -> None:
    path = version_dir / "policy.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def nothing_published(store: PolicyStore) -> bool:
    """No version and no temp dir left behind."""
    leftovers = [p for p in store.root.rglob("*") if p.is_file() or p.name.startswith(".tmp")]
    return store.list() == [] and (not store.root.exists() or leftovers == [])


@pytest.mark.parametrize("damage", [corrupt_flip_bytes, corrupt_truncate, corrupt_random_bytes])
def test_publish_refuses_a_file_that_does_not_match_its_exported_checksum(dexstack_home, tmp_path, damage) -> None:
    src = make_export(tmp_path / "export")
    damage(src)
    store = PolicyStore()
    with pytest.raises(ManifestError, match=r"checksum mismatch for \['policy.onnx'\] .*nothing was published"):
        store.publish(src)
    assert nothing_published(store)


@pytest.mark.parametrize("damage", [corrupt_flip_bytes, corrupt_truncate, corrupt_random_bytes])
def test_publish_opens_every_graph_before_the_version_is_visible(dexstack_home, tmp_path, damage) -> None:
    # No exported checksums to catch it (the bytes are vouched for as they are): onnxruntime must.
    src = make_export(tmp_path / "export", checksums=False)
    damage(src)
    store = PolicyStore()
    with pytest.raises(PolicyRejected, match=r"policy add_one: onnxruntime cannot open graph 'policy' \(policy.onnx\)"):
        store.publish(src, record_checksums=True)
    assert nothing_published(store)


def test_an_export_without_checksums_needs_record_checksums(dexstack_home, tmp_path) -> None:
    src = make_export(tmp_path / "export", checksums=False)
    store = PolicyStore()
    with pytest.raises(ManifestError, match="records no sha256 of its files .*--record-checksums"):
        store.publish(src, record_checksums=False)
    assert nothing_published(store)
    published = store.publish(src, record_checksums=True)
    assert published.manifest["files"] == file_checksums(src)


def test_export_records_the_checksum_of_every_file(tmp_path) -> None:
    from dexstack.policies.common.export import write_policy_dir

    manifest = json.loads((make_export(tmp_path / "template", checksums=False) / "manifest.json").read_text())

    def write_graphs(tmp: Path) -> dict:
        write_add_one_onnx(tmp / "policy.onnx")
        (tmp / "stats").mkdir()
        (tmp / "stats" / "norm.json").write_text("{}")
        return {"policy": 0.0}

    out = write_policy_dir(tmp_path / "export", manifest, write_graphs)
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files == {
        rel: hashlib.sha256((out / rel).read_bytes()).hexdigest() for rel in ("policy.onnx", "stats/norm.json")
    }


def test_schema_1_versions_load_upgraded_in_memory(dexstack_home, tmp_path) -> None:
    store = PolicyStore()
    published = store.publish(make_export(tmp_path / "old", schema_version=1))
    on_disk = json.loads((published.path / "manifest.json").read_text())
    assert on_disk["schema_version"] == 1 and all("max_age_s" not in s for s in on_disk["inputs"])  # stored as given
    loaded = store.load("add_one", PANDA)
    assert loaded.manifest["schema_version"] == 2
    assert [s["max_age_s"] for s in loaded.manifest["inputs"]] == [
        contract.JOINT_STATE_MAX_AGE_S,
        contract.CAMERA_MAX_AGE_S,
    ]
    assert loaded.manifest_sha256 == hashlib.sha256((published.path / "manifest.json").read_bytes()).hexdigest()


def test_unregistered_family_is_refused(dexstack_home, tmp_path) -> None:
    store = PolicyStore()
    with pytest.raises(ManifestError, match=r"unknown policy family 'nope'; known families: bc, diffusion, gpayn"):
        store.publish(make_export(tmp_path / "nope", family="nope"))
    assert store.list() == []
    # A version whose family is gone (uninstalled plug-in) is refused at load, with the reason.
    published = store.publish(make_export(tmp_path / "ok"))
    manifest_path = published.path / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace('"family": "bc"', '"family": "nope"'))
    with pytest.raises(PolicyRejected, match=r"policy add_one@1: unknown policy family 'nope'"):
        store.load("add_one", PANDA)


def _publish_in_process(root: str, src: str, start, results) -> None:
    start.wait()
    try:
        results.put(PolicyStore(root, bundled=False).publish(src).version)
    except BaseException as exc:  # report, so the parent fails with the reason
        results.put(f"error: {exc!r}")


def _watch_versions(store: PolicyStore, stop: threading.Event, seen: set, problems: list) -> None:
    # Every version a reader can see must be complete and verify (never a partial one).
    while not stop.is_set():
        try:
            rows = store.list()
        except Exception as exc:
            problems.append(repr(exc))
            continue
        for row in rows:
            if row["version"] not in seen:
                try:
                    store.verify(f"{row['name']}@{row['version']}")
                    seen.add(row["version"])
                except Exception as exc:
                    problems.append(repr(exc))


def test_concurrent_publishes_processes_and_threads(dexstack_home, tmp_path) -> None:
    store = PolicyStore()
    src = make_export(tmp_path / "export")
    ctx = mp.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    stop, seen, problems = threading.Event(), set(), []
    watcher = threading.Thread(target=_watch_versions, args=(store, stop, seen, problems))
    procs = [
        ctx.Process(target=_publish_in_process, args=(str(store.root), str(src), start, results)) for _ in range(8)
    ]
    for p in procs:
        p.start()  # fork before the watcher thread exists
    watcher.start()
    try:
        start.set()
        versions = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all(p.exitcode == 0 for p in procs)

        # Threads in one process race the same way.
        thread_versions: list[str] = []
        barrier = threading.Barrier(6)

        def publish_thread() -> None:
            barrier.wait()
            thread_versions.append(PolicyStore().publish(src).version)

        threads = [threading.Thread(target=publish_thread) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        stop.set()
        watcher.join(timeout=60)

    assert not [v for v in versions if v.startswith("error")], versions
    all_versions = versions + thread_versions
    assert sorted(all_versions, key=int) == [str(i) for i in range(1, 15)]  # distinct, no gaps
    assert problems == []
    name_dir = store.root / "add_one"
    assert sorted(os.listdir(name_dir), key=int) == [str(i) for i in range(1, 15)]  # no temp dirs left
    for v in all_versions:
        assert store.load(f"add_one@{v}", PANDA).manifest["version"] == v


def test_bundled_store_is_read_only_fallback(dexstack_home, tmp_path, monkeypatch) -> None:
    bundled_dir = tmp_path / "bundled"
    shipped = PolicyStore(bundled_dir, bundled=False)
    src = make_export(tmp_path / "export")
    shipped.publish(src)
    shipped.publish(src)
    shipped.promote("add_one@1")
    bundled_before = snapshot(bundled_dir)

    store = PolicyStore(bundled=bundled_dir)
    assert store.resolve("add_one") == bundled_dir / "add_one" / "1"  # the bundled promotion
    assert [(r["version"], r["source"], r["promoted"]) for r in store.list()] == [
        ("1", "bundled", True),
        ("2", "bundled", False),
    ]
    assert store.load("add_one", PANDA).path == bundled_dir / "add_one" / "1"

    local = store.publish(src)
    assert local.version == "3" and local.path == store.root / "add_one" / "3"  # numbers continue after bundled
    store.promote("add_one@2")  # promotion of a bundled version is recorded in the writable store
    assert store.resolve("add_one") == bundled_dir / "add_one" / "2"
    assert (store.root / "add_one" / "PROMOTED").read_text().strip() == "2"
    assert snapshot(bundled_dir) == bundled_before  # never written

    # An environment variable points the default store at the bundled one too.
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", str(bundled_dir))
    assert [r["source"] for r in PolicyStore().list()] == ["bundled", "bundled", "local"]


def test_dangling_promotion_is_refused(dexstack_home, tmp_path) -> None:
    store = PolicyStore()
    store.publish(make_export(tmp_path / "export"))
    (store.root / "add_one" / "PROMOTED").write_text("7\n")
    with pytest.raises(PolicyRejected, match="promoted to version '7', which does not exist"):
        store.load("add_one", PANDA)
    assert store.load("add_one@1", PANDA).version == "1"


# --- CLI ------------------------------------------------------------------------------------


def test_cli_publish_list_show_promote_verify(dexstack_home, tmp_path) -> None:
    runner = CliRunner(env={"COLUMNS": "250"})  # wide enough that table cells don't fold
    src = make_export(tmp_path / "export")
    root = tmp_path / "cli_store"

    result = runner.invoke(store_cli, ["list", "--root", str(root)])
    assert result.exit_code == 0 and "no policies" in result.output

    result = runner.invoke(store_cli, ["publish", str(src), "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "published add_one@1" in result.output
    result = runner.invoke(store_cli, ["publish", str(src), "--name", "pick", "--promote", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "published pick@1 (promoted)" in result.output
    assert (root / "pick" / "PROMOTED").read_text().strip() == "1"
    runner.invoke(store_cli, ["publish", str(src), "--root", str(root)])

    result = runner.invoke(store_cli, ["list", "--root", str(root)])
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if "add_one" in line or "pick" in line]
    assert len(lines) == 3 and all("bc" in line for line in lines)

    result = runner.invoke(store_cli, ["promote", "add_one@1", "--root", str(root)])
    assert result.exit_code == 0 and "promoted add_one@1" in result.output
    assert PolicyStore(root).resolve("add_one").name == "1"

    result = runner.invoke(store_cli, ["show", "add_one@2", "--root", str(root)])
    assert result.exit_code == 0, result.output
    for text in (
        "add_one@2",
        "family=bc",
        "scene_rgb",
        "/camera/scene/color/image_raw",
        "chunk_length=8",
        "policy.onnx",
        "stats/norm.json",
        '"code_commit": "test"',
        "evaluation: {}",
    ):
        assert text in result.output, text

    result = runner.invoke(store_cli, ["verify", "add_one@2", "--deep", "--profile", "panda", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "OK add_one@2 (checksums, manifest, robot profile, onnxruntime)" in result.output

    corrupt_flip_bytes(root / "add_one" / "2")
    result = runner.invoke(store_cli, ["verify", "add_one@2", "--root", str(root)])
    assert result.exit_code == 1
    assert "error: policy add_one@2: checksum mismatch for policy.onnx" in result.output

    for args, message in [
        (["verify", "add_one", "--profile", "ur5e"], "unknown robot profile 'ur5e'"),
        (["show", "missing"], "no policy named 'missing'"),
        (["promote", "add_one@2"], "checksum mismatch for policy.onnx"),
        (["publish", str(tmp_path / "absent")], "not a directory"),
        (
            ["publish", str(make_export(tmp_path / "bad_joint", joint_names=[*PANDA.joint_names[:7], "panda_jointX"]))],
            "output joint 'panda_jointX' is not a joint of robot profile 'panda'",
        ),
    ]:
        result = runner.invoke(store_cli, [*args, "--root", str(root)])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
    assert PolicyStore(root).resolve("add_one").name == "1"  # the refused promote changed nothing
