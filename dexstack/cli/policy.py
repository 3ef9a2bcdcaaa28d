"""`dexstack policy ...`: drive a running graph's policy and safety filter over DDS.

What the README used to ask `ros2 service call` / `ros2 param set` for, for machines that have
only the pip ROS 2 wheels (no `ros2` command). Every command is a plain rclpy client on the
chosen domain; a node that is not up gives a one-line error (exit 1), never a hang:

- `enable`: the policy node's `~/enable` (SetBool true), then the safety filter's (its velocity
  ramp starts then); `disable`: the filter first (it holds at once), then the policy node.
- `reload [REF]`: no REF: the policy node's `~/reload` (re-resolve its current ref, e.g. after
  `dexstack store promote`); with REF: set its `policy` parameter (rcl_interfaces
  SetParameters, what `ros2 param set /policy policy REF` does); the node verifies and hot-swaps,
  or refuses and keeps serving the old version.
- `status`: the latest /diagnostics status of both nodes (`--json` for scripts).
- `estop reset`: the filter's `~/reset_estop` (refused while the e-stop input is pressed).

Node names default to those of the bringup node list (`dexstack.graph.node_list`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

if TYPE_CHECKING:
    from dexstack.ros_nodes.client import RosClient

app = typer.Typer(no_args_is_help=True, add_completion=False)
estop_app = typer.Typer(no_args_is_help=True, add_completion=False)
app.add_typer(estop_app, name="estop", help="E-stop latch of the safety filter.")


def _default_names() -> dict[str, str]:
    """executable -> node name in the bringup node list (the one source of node names)."""
    from dexstack.graph import node_list

    return {spec.executable: spec.name for spec in node_list({})}


_NAMES = _default_names()
DomainOption = Annotated[
    int | None,
    typer.Option("--domain", "--domain-id", help="ROS_DOMAIN_ID of the graph (default: $ROS_DOMAIN_ID, else 0)"),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each node's service and its answer")
]
PolicyNodeOption = Annotated[str, typer.Option("--policy-node", help="Name of the policy node")]
FilterNodeOption = Annotated[str, typer.Option("--filter-node", help="Name of the safety filter node")]
DEFAULT_POLICY_NODE = _NAMES["policy_node"]
# What the table shows of the nodes' diagnostics values (--json gives them all).
STATUS_KEYS = (
    "policy",
    "version",
    "enabled",
    "estop_latched",
    "estop_pressed",
    "ramp_scale",
    "held",
    "hold_count",
    "last_hold_reason",
    "load_error",
)
DEFAULT_FILTER_NODE = _NAMES["safety_filter"]


def _fqn(name: str) -> str:
    return name if name.startswith("/") else f"/{name}"


def _domain_text(domain: int | None) -> str:
    return str(domain) if domain is not None else os.environ.get("ROS_DOMAIN_ID", "0")


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(1)


@contextmanager
def _client(domain: int | None) -> Iterator[RosClient]:
    # Like every dexstack process: discovery stays on this host unless the user says otherwise.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from dexstack.ros_nodes.client import RosClient

    client = RosClient("dexstack_policy_cli", domain_id=domain)
    try:
        yield client
    finally:
        client.close()


def _call(client: RosClient, srv_type: Any, service: str, request: Any, timeout: float, domain: int | None) -> Any:
    """The service's answer; TimeoutError with a one-line reason that names the domain."""
    try:
        return client.call(srv_type, service, request, timeout_s=timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc} on ROS domain {_domain_text(domain)}: is the graph up (dexstack up)?") from None


def _set_bool(client: RosClient, node: str, value: bool, timeout: float, domain: int | None) -> tuple[bool, str]:
    from std_srvs.srv import SetBool

    answer = _call(client, SetBool, f"{_fqn(node)}/enable", SetBool.Request(data=value), timeout, domain)
    return answer.success, answer.message


def _report(results: list[tuple[str, bool, str]]) -> None:
    """Print one line per node; exit 1 if any refused or was not reached."""
    console = Console(soft_wrap=True, highlight=False)
    for node, ok, message in results:
        line = escape(f"{node}: {message}")
        console.print(line if ok else f"[bold red]{line}[/]")
    if not all(ok for _, ok, _ in results):
        raise typer.Exit(1)


@app.command()
def enable(
    domain: DomainOption = None,
    timeout: TimeoutOption = 10.0,
    policy_node: PolicyNodeOption = DEFAULT_POLICY_NODE,
    filter_node: FilterNodeOption = DEFAULT_FILTER_NODE,
) -> None:
    """Enable the policy node, then the safety filter (its velocity ramp starts)."""
    with _client(domain) as client:
        results = []
        for node in (policy_node, filter_node):
            try:
                ok, message = _set_bool(client, node, True, timeout, domain)
            except TimeoutError as exc:
                _fail(str(exc))
            results.append((_fqn(node), ok, message))
            if not ok:
                break  # e.g. the filter's e-stop is latched: say so, enable nothing more
    _report(results)


@app.command()
def disable(
    domain: DomainOption = None,
    timeout: TimeoutOption = 10.0,
    policy_node: PolicyNodeOption = DEFAULT_POLICY_NODE,
    filter_node: FilterNodeOption = DEFAULT_FILTER_NODE,
) -> None:
    """Disable the safety filter (it holds at once), then the policy node."""
    results = []
    with _client(domain) as client:
        # The filter first, and the policy node even when the filter was not reached: stopping
        # must do as much as it can.
        for node in (filter_node, policy_node):
            try:
                ok, message = _set_bool(client, node, False, timeout, domain)
            except TimeoutError as exc:
                ok, message = False, str(exc)
            results.append((_fqn(node), ok, message))
    _report(results)


@app.command()
def reload(
    ref: Annotated[
        str | None, typer.Argument(help="NAME or NAME@VERSION to serve (default: re-resolve the current one)")
    ] = None,
    domain: DomainOption = None,
    timeout: TimeoutOption = 30.0,
    policy_node: PolicyNodeOption = DEFAULT_POLICY_NODE,
) -> None:
    """Hot-swap the served policy: re-resolve the current ref, or switch to REF."""
    node = _fqn(policy_node)
    with _client(domain) as client:
        try:
            if ref is None:
                from std_srvs.srv import Trigger

                answer = _call(client, Trigger, f"{node}/reload", Trigger.Request(), timeout, domain)
                ok, message = answer.success, answer.message
            else:
                ok, message = _set_parameter(client, node, "policy", ref, timeout, domain)
        except TimeoutError as exc:
            _fail(str(exc))
    _report([(node, ok, message)])


def _set_parameter(
    client: RosClient, node: str, name: str, value: str, timeout: float, domain: int | None
) -> tuple[bool, str]:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    param = Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
    answer = _call(
        client, SetParameters, f"{node}/set_parameters", SetParameters.Request(parameters=[param]), timeout, domain
    )
    result = answer.results[0]
    # rclpy drops the reason of a successful set; the node swaps inside the callback (policy_node
    # `_on_set_parameters`), so success means it now serves `value`.
    return result.successful, result.reason or (f"serving {value}" if name == "policy" else f"{name} := {value}")


@app.command()
def status(
    domain: DomainOption = None,
    timeout: TimeoutOption = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts)")] = False,
    policy_node: PolicyNodeOption = DEFAULT_POLICY_NODE,
    filter_node: FilterNodeOption = DEFAULT_FILTER_NODE,
) -> None:
    """The latest diagnostics of the safety filter and the policy node; exit 1 if one is silent."""
    from dexstack import contract
    from dexstack.ros_nodes.common import LEVEL, QOS

    names = {level: text for text, level in LEVEL.items()}
    wanted = [_fqn(filter_node), _fqn(policy_node)]
    latest: dict[str, dict[str, Any]] = {}

    def on_diagnostics(msg: Any) -> None:
        for s in msg.status:
            if s.name in wanted:
                values = {kv.key: kv.value for kv in s.values}
                latest[s.name] = {"level": names.get(s.level, "?"), "message": s.message, "values": values}

    from diagnostic_msgs.msg import DiagnosticArray

    with _client(domain) as client:
        client.node.create_subscription(
            DiagnosticArray, contract.DIAGNOSTICS, on_diagnostics, QOS[contract.QoSKind.DEFAULT]
        )
        client.spin_until(lambda: all(n in latest for n in wanted), timeout)
    silent = [n for n in wanted if n not in latest]
    report = {n: latest.get(n) for n in wanted}
    if as_json:
        typer.echo(json.dumps(report))
    else:
        table = Table("node", "level", "message", Column("details", overflow="fold"))
        for node, entry in report.items():
            if entry is None:
                table.add_row(node, "-", f"no diagnostics in {timeout:g} s", "")
            else:
                values = entry["values"]
                details = " ".join(f"{k}={values[k]}" for k in STATUS_KEYS if values.get(k, "") != "")
                table.add_row(node, entry["level"], escape(entry["message"]), escape(details))
        Console(width=None if sys.stdout.isatty() else 160).print(table)  # a pipe gets whole lines
    if silent:
        _fail(
            f"no diagnostics from {', '.join(silent)} in {timeout:g} s on ROS domain {_domain_text(domain)}: "
            "is the graph up (dexstack up)?"
        )


@estop_app.command("reset")
def estop_reset(
    domain: DomainOption = None,
    timeout: TimeoutOption = 10.0,
    filter_node: FilterNodeOption = DEFAULT_FILTER_NODE,
) -> None:
    """Clear the filter's e-stop latch (release the e-stop first); then `dexstack policy enable`."""
    from std_srvs.srv import Trigger

    node = _fqn(filter_node)
    with _client(domain) as client:
        try:
            answer = _call(client, Trigger, f"{node}/reset_estop", Trigger.Request(), timeout, domain)
        except TimeoutError as exc:
            _fail(str(exc))
    _report([(node, answer.success, answer.message)])
