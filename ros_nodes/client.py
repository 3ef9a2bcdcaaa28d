"""A plain rclpy client with its own context: what evaluation, demo collection, benchmarks and
tests use to watch and drive a graph of dexstack nodes from outside."""

from __future__ import annotations

import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor


class RosClient:
    """One node on its own context and executor (several can live in one process)."""

    def __init__(self, name: str = "dexstack_client", domain_id: int | None = None) -> None:
        self.context = Context()
        if domain_id is None:
            rclpy.init(context=self.context)
        else:
            rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, srv_type, name: str, request, timeout_s: float = 30.0):
        """Call a service and wait for the answer; raises TimeoutError naming the service."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise TimeoutError(f"service {name} not available after {timeout_s:.0f} s")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
            if not future.done():
                raise TimeoutError(f"service {name} did not answer in {timeout_s:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
