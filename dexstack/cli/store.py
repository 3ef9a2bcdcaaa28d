"""`dexstack store ...`: list, show, verify, publish and promote policies (docs/STORE.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

app = typer.Typer(no_args_is_help=True, add_completion=False)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Writable store directory (default: $DEXSTACK_HOME/policies, else ~/.dexstack/policies)"
    ),
]


def _store(root: Path | None) -> Any:
    from dexstack.store import PolicyStore  # imported per command so `dexstack --help` stays fast

    return PolicyStore(root=root)


def _table(*headers: str, title: str | None = None) -> Table:
    # fold, not ellipsis: a truncated topic name or checksum is worse than a wrapped one
    return Table(*(Column(h, overflow="fold") for h in headers), title=title)


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(1)


def _manifest_profile(path: Path) -> Any:
    """The robot profile a version or export directory's manifest names (the store knows no robots)."""
    from dexstack.hardware.profiles import get_profile
    from dexstack.manifest import load_manifest

    name = load_manifest(path).get("robot_profile")
    try:
        return get_profile(name)
    except (KeyError, TypeError) as exc:
        _fail(f"{path}: robot_profile {name!r}: {exc}")


def _rejections() -> tuple[type[Exception], ...]:
    from dexstack.manifest import ManifestError
    from dexstack.store import PolicyRejected

    return (ManifestError, PolicyRejected)


@app.command("list")
def list_policies(
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as one JSON array (for scripts)")] = False,
) -> None:
    """List every policy version (writable store first, then the bundled one)."""
    store = _store(root)
    rows = store.list()
    if as_json:
        typer.echo(json.dumps(rows))  # [] when empty: a script gets valid JSON either way
        return
    console = Console(soft_wrap=True)
    if not rows:
        console.print(f"no policies in {', '.join(f'{b.label} {b.location}' for b in store.backends)}")
        return
    table = _table("name", "version", "family", "promoted", "created", "source", "path")
    for row in rows:
        table.add_row(
            row["name"],
            row["version"],
            row["family"],
            "*" if row["promoted"] else "",
            row["created"],
            row["source"],
            row["path"],
        )
    console.print(table)


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")], root: RootOption = None) -> None:
    """Summarise a version's manifest: family, inputs, outputs, files, provenance, evaluation."""
    from dexstack.manifest import load_manifest

    store = _store(root)
    try:
        path = store.resolve(ref)
        m = load_manifest(path)
    except _rejections() as exc:
        _fail(str(exc))
    console = Console(soft_wrap=True)
    console.print(
        f"[bold]{m.get('name')}@{m.get('version')}[/]  family={m.get('family')}  "
        f"robot_profile={m.get('robot_profile')}  schema_version={m.get('schema_version')}"
    )
    console.print(f"path: {path}", highlight=False)

    inputs = _table("input", "kind", "source", "shape", "dtype", "normalization", title="inputs")
    for spec in m.get("inputs", []):
        norm = spec.get("normalization", {}).get("type", "none") if isinstance(spec.get("normalization"), dict) else "?"
        inputs.add_row(
            str(spec.get("name")),
            str(spec.get("kind")),
            str(spec.get("source")),
            str(spec.get("shape")),
            str(spec.get("dtype")),
            norm,
        )
    console.print(inputs)
    out = m.get("outputs", {})
    console.print(
        f"outputs: {out.get('kind')}  chunk_length={out.get('chunk_length')}  dt={out.get('dt')} s  "
        f"joints={', '.join(out.get('joint_names', []))}"
    )
    console.print(f"graphs: {json.dumps(m.get('graphs', {}))}")
    files = _table("file", "bytes", "sha256", title="files")
    for rel, digest in sorted(m.get("files", {}).items()):
        size = (path / rel).stat().st_size if (path / rel).is_file() else "missing"
        files.add_row(rel, str(size), str(digest))
    console.print(files)
    console.print("provenance: " + json.dumps(m.get("provenance", {}), indent=2), highlight=False)
    console.print("evaluation: " + json.dumps(m.get("evaluation", {}), indent=2), highlight=False)


@app.command("verify")
def verify(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION")],
    profile: Annotated[
        str | None, typer.Option(help="Robot profile to check against (default: the manifest's)")
    ] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also open every graph with onnxruntime")] = False,
    root: RootOption = None,
) -> None:
    """Verify checksums, manifest and fit to the robot profile; exit code 1 with the reason if refused."""
    store = _store(root)
    try:
        if profile is not None:
            from dexstack.hardware.profiles import get_profile

            try:
                robot = get_profile(profile)
            except KeyError as exc:
                _fail(exc.args[0])
        else:
            robot = _manifest_profile(store.resolve(ref))
        loaded = store.verify(ref, robot, deep=deep)
    except _rejections() as exc:
        _fail(str(exc))
    checks = "checksums, manifest, robot profile" + (", onnxruntime" if deep else "")
    Console(soft_wrap=True).print(
        f"OK {loaded.name}@{loaded.version} ({checks}); manifest sha256 {loaded.manifest_sha256}; {loaded.path}",
        highlight=False,
    )


@app.command("publish")
def publish(
    src_dir: Annotated[Path, typer.Argument(help="Export directory: manifest.json + files")],
    name: Annotated[str | None, typer.Option(help="Policy name (default: the manifest's 'name')")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Promote the new version")] = False,
    record_checksums: Annotated[
        bool,
        typer.Option(
            "--record-checksums",
            help="For an export whose manifest records no sha256 'files' (not made by `dexstack export`): "
            "vouch for the files as they are and record their checksums",
        ),
    ] = False,
    root: RootOption = None,
) -> None:
    """Publish an export directory as the next version of a policy: every file must match the sha256
    the export recorded and every graph must open in onnxruntime, or nothing is published."""
    store = _store(root)
    try:
        robot = _manifest_profile(src_dir) if src_dir.is_dir() else None  # else publish says why
        loaded = store.publish(src_dir, name=name, profile=robot, record_checksums=record_checksums)
        if promote:
            store.promote(f"{loaded.name}@{loaded.version}", robot)
    except _rejections() as exc:
        _fail(str(exc))
    Console(soft_wrap=True).print(
        f"published {loaded.name}@{loaded.version}" + (" (promoted)" if promote else "") + f" to {loaded.path}",
        highlight=False,
    )


@app.command("promote")
def promote(ref: Annotated[str, typer.Argument(help="NAME@VERSION")], root: RootOption = None) -> None:
    """Make plain NAME resolve to NAME@VERSION (after verifying it for its robot profile)."""
    store = _store(root)
    try:
        store.promote(ref, _manifest_profile(store.resolve(ref)))
    except _rejections() as exc:
        _fail(str(exc))
    Console(soft_wrap=True).print(f"promoted {ref}", highlight=False)
