"""A fake Kubernetes cluster for the Kubernetes runtime's tests: kmock plus a simulated kubelet.

kmock (0.8) is THE fake Kubernetes API of this project's tests: a stateful in-memory API server
(`kmock.KubernetesEmulator`) on a local HTTP port. `FakeCluster` adds what ferry needs and kmock
lacks:

- server-set metadata on create: uid, resourceVersion, namespace, creationTimestamp, and a
  `Pending` status for pods; resourceVersion bumped on every update;
- label selectors (`k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and the
  `metadata.name`/`metadata.namespace` field selectors on lists and watches;
- garbage collection by ownerReference: deleting a pod deletes the Secrets it owns;
- hooks run for every pod created (the simulated kubelet).

`Kubelet` plays the node: it PATCHes pod status (Running, terminated containers with exit
codes, ErrImagePull, OOMKilled, Evicted, DeadlineExceeded) and, instead of running containers,
acts as the pod's relay and heartbeat sidecars: it reads the relay endpoint and token from the
sidecars' commands, connects to ferry's relay listener with the real handshake, writes the
connector's stdout/stderr, reads its stdin and reports the exit code over the heartbeat
endpoint, like the shell sidecars do (a single pod's pump reports its own: it has no heartbeat
sidecar). What a "container" prints is decided by a `Program`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
import json
import re
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
import kmock
import yaml
from kmock._internal import enums, rendering

PodHook = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
_versions = itertools.count(1)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    terms = (term.strip() for term in re.split(r",(?![^()]*\))", selector))
    return all(_term_matches(term, labels) for term in terms if term)


def _term_matches(term: str, labels: Mapping[str, str]) -> bool:
    """One term of a label selector: `k in (a,b)`, `k notin (..)`, `k!=v`, `k=v`, `!k`, `k`."""
    if match := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", term):
        key, op, values = match.groups()
        wanted = {v.strip() for v in values.split(",")}
        return (labels.get(key) in wanted) == (op == "in")
    if "!=" in term:
        key, value = term.split("!=", 1)
        return labels.get(key.strip()) != value.strip()
    if "=" in term:
        key, value = term.split("=", 1)
        return labels.get(key.strip().rstrip("=")) == value.strip().lstrip("=")
    if term.startswith("!"):
        return term[1:] not in labels
    return term in labels


def _fields_match(selector: str, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for term in selector.split(","):
        if not term.strip():
            continue
        key, _, value = term.partition("=")
        key, value = key.strip(), value.strip().lstrip("=")
        if key == "metadata.name" and meta.get("name") != value:
            return False
        if key == "metadata.namespace" and meta.get("namespace") != value:
            return False
    return True


def selected(request: rendering.Request, obj: Mapping[str, Any] | None) -> bool:
    if obj is None:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    label_selector = request.params.get("labelSelector")
    if label_selector and not _selector_matches(label_selector, labels):
        return False
    field_selector = request.params.get("fieldSelector")
    return not (field_selector and not _fields_match(field_selector, obj))


def _stamp_metadata(request: rendering.Request, data: dict[str, Any], plural: str | None) -> None:
    """What the API server sets: uid, resourceVersion, creation time, a new pod's phase."""
    if request.action == enums.action.CREATE:
        meta = data.setdefault("metadata", {})
        meta.setdefault("namespace", request.namespace or "default")
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(_versions))
        meta["creationTimestamp"] = _now()
        if plural == "pods":
            data.setdefault("status", {"phase": "Pending"})
    elif request.action == enums.action.UPDATE:
        data.setdefault("metadata", {})["resourceVersion"] = str(next(_versions))


@attrs.define(kw_only=True)
class FakeCluster(kmock.KubernetesEmulator):
    """kmock's emulator with server-set metadata, selectors, ownerReference GC and pod hooks."""

    pod_hooks: list[PodHook] = attrs.field(factory=list)
    hook_tasks: set[asyncio.Task[None]] = attrs.field(factory=set)

    async def _handle(self, request: rendering.Request) -> Any:
        resource = request.resource
        plural = getattr(resource, "plural", None)
        if resource is not None and isinstance(request.data, dict):
            _stamp_metadata(request, request.data, plural)
        deleting = resource is not None and request.action == enums.action.DELETE
        deleted_uid = self._live_uid(request) if deleting and plural == "pods" else None
        response = await super()._handle(request)
        if deleted_uid:
            await self._collect_owned(deleted_uid)
        created = resource is not None and request.action == enums.action.CREATE
        if created and plural == "pods" and isinstance(request.data, dict):
            for hook in self.pod_hooks:
                task = asyncio.create_task(hook(json.loads(json.dumps(request.data))))
                self.hook_tasks.add(task)
                task.add_done_callback(self.hook_tasks.discard)
        return response

    def _live_uid(self, request: rendering.Request) -> str | None:
        """The uid of the live object a DELETE request names, if any."""
        for (res, ns, name), obj in self._objects.items():
            named = (res, ns, name) == (request.resource, request.namespace, request.name)
            if named and not obj.deleted:
                uid: str | None = (obj.raw.get("metadata") or {}).get("uid")
                return uid
        return None

    async def _collect_owned(self, uid: str) -> None:
        async with self._lock:
            for (res, _ns, _name), obj in list(self._objects.items()):
                if obj.deleted:
                    continue
                owners = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
                if any(o.get("uid") == uid for o in owners):
                    raw = obj.raw
                    obj.delete()
                    await self._buses[res].put({"type": "DELETED", "object": raw})

    async def _serve_list(self, request: rendering.Request) -> Any:
        result = await super()._serve_list(request)
        if not isinstance(result, dict):
            return result
        result["items"] = [item for item in result["items"] if selected(request, item)]
        return result

    async def _serve_watch(self, request: rendering.Request) -> Any:
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or selected(request, event.get("object")):
                yield event

    # -- for assertions -------------------------------------------------------------------------

    def live(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The raw objects of a resource that exist (not deleted)."""
        return [
            obj.raw
            for (res, ns, _), obj in self._objects.items()
            if res.plural == plural and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def ever(self, plural: str) -> list[dict[str, Any]]:
        """Every object of a resource ever created (its last state), deleted ones included."""
        return [obj.last.raw for (res, _, _), obj in self._objects.items() if res.plural == plural]


def kubeconfig(path: Path, server: str, namespace: str = "ferry-test") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "tester", "namespace": namespace},
                    }
                ],
                "current-context": "kmock",
            }
        )
    )
    return path


# --- the simulated kubelet ----------------------------------------------------------------------


@dataclass
class Outcome:
    """What a simulated connector container does."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    # A failure instead of a normal exit: "ErrImagePull" (any container, see `container`),
    # "OOMKilled", "Evicted", "DeadlineExceeded", "Deleted" (someone deletes the pod),
    # "InitFailed", "Unschedulable" (the scheduler finds no node; the pod stays Pending).
    failure: str | None = None
    delay: float = 0.0  # seconds the connector runs before it writes anything
    container: str = "connector"  # or a single pod's "source", "destination", "pump"
    # When set, called with each chunk of stdin (a destination); returns bytes to write to stdout.
    on_stdin: Callable[[bytes], bytes] | None = None


Program = Callable[[dict[str, Any], dict[str, bytes]], Outcome]


@dataclass
class PodRecord:
    name: str
    namespace: str
    pod: dict[str, Any]
    files: dict[str, bytes]
    secret_owner_uid: str | None = None
    stdin: bytes = b""
    done: asyncio.Event = field(default_factory=asyncio.Event)


def relay_args(pod: Mapping[str, Any]) -> dict[str, tuple[str, int, str]]:
    """container name -> (host, port, token) of the relay and heartbeat sidecars' commands."""
    found: dict[str, tuple[str, int, str]] = {}
    for container in pod["spec"]["containers"]:
        argv = container.get("command") or []
        env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
        if "FERRY_PUMP_RELAY" in env:  # a single pod's pump: its channels and its heartbeat
            host, _, port = env["FERRY_PUMP_RELAY"].rpartition(":")
            for channel in ("relay-stdout", "relay-stderr", "heartbeat"):
                found[channel] = (host, int(port), env["FERRY_PUMP_TOKEN"])
        if len(argv) > 8 and argv[3] == "ferry-relay":
            found[container["name"]] = (argv[6], int(argv[7]), argv[8])
        elif len(argv) > 7 and argv[3] == "ferry-heartbeat":
            found[container["name"]] = (argv[5], int(argv[6]), argv[7])
    return found


class Kubelet:
    """Plays every pod created in `cluster` according to `program`."""

    def __init__(self, cluster: FakeCluster, program: Program) -> None:
        self.cluster = cluster
        self.program = program
        self.pods: list[PodRecord] = []
        cluster.pod_hooks.append(self._play)

    async def _patch_status(self, record: PodRecord, status: dict[str, Any]) -> None:
        url = f"/api/v1/namespaces/{record.namespace}/pods/{record.name}/status"
        async with self.cluster.patch(
            url,
            data=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            await response.read()

    def _secret_files(self, namespace: str, name: str) -> tuple[dict[str, bytes], str | None]:
        for secret in self.cluster.live("secrets", namespace):
            if secret["metadata"]["name"] == name:
                owners = secret["metadata"].get("ownerReferences") or []
                files = {
                    key.removesuffix(".json"): base64.b64decode(value)
                    for key, value in (secret.get("data") or {}).items()
                }
                return files, owners[0]["uid"] if owners else None
        return {}, None

    async def _play(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        record = PodRecord(meta["name"], meta["namespace"], pod, {})
        self.pods.append(record)
        try:
            await asyncio.sleep(0.05)  # ferry patches the Secret's owner right after creating
            record.files, record.secret_owner_uid = self._secret_files(
                record.namespace, record.name
            )
            outcome = self.program(pod, record.files)
            await self._run(record, outcome)
        finally:
            record.done.set()

    async def _end_abruptly(
        self, record: PodRecord, outcome: Outcome, stdout: asyncio.StreamWriter
    ) -> None:
        """The pod is evicted, runs past its deadline or is deleted after some output."""
        stdout.write(outcome.stdout)
        await stdout.drain()
        if outcome.failure == "Deleted":
            path = f"/api/v1/namespaces/{record.namespace}/pods/{record.name}"
            async with self.cluster.delete(path) as response:
                await response.read()
        else:
            message = (
                "The node was low on resource: memory."
                if outcome.failure == "Evicted"
                else "Pod was active on the node longer than the specified deadline"
            )
            status = {"phase": "Failed", "reason": outcome.failure, "message": message}
            await self._patch_status(record, status)
        await asyncio.sleep(0.5)  # the relays stay open: ferry must not wait for them

    async def _run(self, record: PodRecord, outcome: Outcome) -> None:
        names = [c["name"] for c in record.pod["spec"]["containers"]]
        if (status := _status_before_start(outcome)) is not None:
            await self._patch_status(record, status)
            return
        await self._patch_status(
            record,
            {
                "phase": "Running",
                "containerStatuses": [running(name) for name in names],
            },
        )
        endpoints = relay_args(record.pod)
        host, port, token = endpoints["relay-stdout"]
        stdout = await connect(host, port, token, "stdout")
        stderr = await connect(host, port, token, "stderr")
        stdin = await connect(host, port, token, "stdin") if "relay-stdin" in endpoints else None
        writers = [w for _, w in (stdout, stderr) + ((stdin,) if stdin else ())]
        await asyncio.sleep(outcome.delay)
        main = "pump" if "pump" in names else "connector"  # a single pod's, or the connector
        killed: list[dict[str, Any]] = []
        if outcome.failure == "OOMKilled" and outcome.container not in (main, "connector"):
            # A single pod's source or destination: killed while the pump still runs.
            killed.append(terminated(outcome.container, 137, "OOMKilled"))
            statuses = [running(name) for name in names if name != outcome.container]
            await self._patch_status(
                record, {"phase": "Running", "containerStatuses": statuses + killed}
            )
            outcome = Outcome(stdout=outcome.stdout)
        try:
            if outcome.failure in ("Evicted", "DeadlineExceeded", "Deleted"):
                await self._end_abruptly(record, outcome, stdout[1])
                return
            if stdin is not None:
                reader = stdin[0]
                while chunk := await reader.read(1 << 16):
                    record.stdin += chunk
                    if outcome.on_stdin is not None:
                        stdout[1].write(outcome.on_stdin(chunk))
                        await stdout[1].drain()
            stdout[1].write(outcome.stdout)
            stderr[1].write(outcome.stderr)
            for _, writer in (stdout, stderr):
                await writer.drain()
                writer.close()
            code = 137 if outcome.failure == "OOMKilled" else outcome.exit_code
            if outcome.failure != "OOMKilled":
                await report_exit(*endpoints["heartbeat"], code)
            reason = (
                "OOMKilled"
                if outcome.failure == "OOMKilled"
                else ("Completed" if code == 0 else "Error")
            )
            ended = {main} | {status["name"] for status in killed}
            statuses = [terminated(main, code, reason), *killed]
            statuses += [terminated(name, 0, "Completed") for name in names if name not in ended]
            await self._patch_status(
                record,
                {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": statuses},
            )
        finally:
            for writer in writers:
                with contextlib.suppress(Exception):
                    writer.close()


def running(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "ready": True,
        "restartCount": 0,
        "image": "x",
        "imageID": "x",
        "state": {"running": {"startedAt": _now()}},
    }


def terminated(name: str, code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "image": "x",
        "imageID": "x",
        "state": {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "message": message,
                "startedAt": _now(),
                "finishedAt": _now(),
            }
        },
    }


async def connect(
    host: str, port: int, token: str, channel: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"FERRY-RELAY/1 {token} {channel}\n".encode())
    await writer.drain()
    return reader, writer


async def report_exit(host: str, port: int, token: str, code: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /exit/{token}/{code} HTTP/1.1\r\nHost: ferry\r\n\r\n".encode())
    await writer.drain()
    await reader.read()
    writer.close()


def _status_before_start(outcome: Outcome) -> dict[str, Any] | None:
    """The status of a pod whose outcome stops it before its containers run, else None."""
    if outcome.failure == "ErrImagePull":
        key = "initContainerStatuses" if outcome.container == "ferry-init" else "containerStatuses"
        waiting = {
            "reason": "ErrImagePull",
            "message": "pull access denied, repository does not exist",
        }
        status = {
            "name": outcome.container,
            "ready": False,
            "restartCount": 0,
            "image": "whatever",
            "imageID": "",
            "state": {"waiting": waiting},
        }
        return {"phase": "Pending", key: [status]}
    if outcome.failure == "Unschedulable":
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
        }
        return {"phase": "Pending", "conditions": [condition]}
    if outcome.failure == "InitFailed":
        init = terminated("ferry-init", 1, "Error", "cannot create the FIFO")
        return {"phase": "Failed", "initContainerStatuses": [init]}
    return None
