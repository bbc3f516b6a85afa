"""The Podman runtime: the Kubernetes pod layout, played for real by `podman kube play`.

Per connector run (`podman:IMAGE`, or `runtime: podman`):

1. The images (connector and sidecar) are checked with `podman image exists` and pulled per the
   `pull` policy; with `entrypoint: auto` and no AIRBYTE_ENTRYPOINT in the image, the image's
   ENTRYPOINT (else CMD) becomes the wrapper's entrypoint override (said so in the log).
2. A relay token is registered on ferry's one relay listener.
3. The manifests are the Kubernetes ones (`manifests.build_manifests`), adapted by
   `manifests.for_podman`: the Secret becomes a podman secret created beforehand from a Secret
   document holding the PLAIN file contents (podman 4.3 writes `data` values to the files as they
   are; an inline `kind: Secret` would mount base64 text), labelled like the pod. A single pod's
   Secret volumes select keys per container: each becomes a podman secret of its own
   (`<pod>.<volume>`, `manifests.podman_secrets`), since podman mounts one secret's volumes as one.
4. `podman kube play -` runs the pod, without the Kubernetes manifests' init container (the
   wrapper and the relays make the FIFOs, whichever comes first; the heartbeat makes the
   emptyDir, which podman creates 0755, writable for connectors running as another user): an
   init container runs to its end before the other containers start, 0.35 s of `kube play`.
   By default with `hostNetwork: true` and the relays connecting to 127.0.0.1;
   `kubernetes: {host_network: false}` puts the pod on podman's bridge and the relays connect
   to host.containers.internal. Measured on this 2-core VM, 2 GB from `dd` in the connector
   container through FIFO, relay sidecar and ferry's listener: 1.08 GB/s with host network,
   0.97 GB/s on the bridge.
5. `podman wait` on the connector container gives its exit code (looking every 100 ms), unless
   the heartbeat sidecar reports exit code 0 first (podman learns an exit only once its cleanup
   of the container ran: 0.2-0.4 s later); `podman inspect` says whether a failed one was
   OOMKilled. Podman 4.3 ignores
   `activeDeadlineSeconds`: this runtime enforces it and reports DeadlineExceeded. Podman also
   ignores `terminationGracePeriodSeconds`: `terminate` uses `podman pod stop -t GRACE` (the
   wrapper and sidecars trap SIGTERM).
6. Teardown: the containers get a moment to end on their own, then `podman pod stop -t 0`
   (unless podman stopped the pod already: kube play's exit policy does once the last
   container exited), a wait until podman has cleaned up after every container (their conmons
   gone, `settle`: else `pod rm` may stall 3 s), `podman pod rm -f` (removes the emptyDir volume),
   `podman secret rm` and `podman volume rm` of the volume podman made for each secret (named
   after it; it holds the files in plain text, so it must not outlive the run). A pod whose
   connector exited on its own is removed while ferry goes on (spec, check and discover run
   before the sync's pods start); the runtime's `close()` waits for those removals. `ferry gc`
   sweeps what a killed ferry left (`pods.gc.collect_podman`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.errors import ConnectorCrashed, FerryError, ImageUnavailable, RuntimeUnavailable
from ferry.relay import (
    LOOPBACK_HOST,
    PODMAN_HOST,
    RelayRegistration,
    derive_entrypoint,
    shared_listener,
)
from ferry.relay import sidecar_image as resolve_sidecar_image
from ferry.runtimes.base import ConnectorInvocation, ConnectorRef, LogSink, fingerprint_of
from ferry.runtimes.options import KubernetesSettings
from ferry.runtimes.owner import owner_labels
from ferry.runtimes.pods.manifests import (
    CONNECTOR_CONTAINER,
    PodManifests,
    build_manifests,
    for_podman,
    podman_secrets,
)
from ferry.runtimes.relayed import PodProcess, start_pod

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT = 300.0
# How often `podman wait` looks at the container (its default 250ms adds 125 ms on average to
# every short command such as discover; a look costs podman about 1 ms of CPU).
WAIT_INTERVAL = "100ms"
# How long a stopped pod's containers may take to be cleaned up before it is removed anyway.
SETTLE_TIMEOUT = 10.0
# How long a pod's containers get to end on their own before it is stopped for its removal (after
# its main container exited, the sidecars end within a heartbeat tick).
LINGER = 2.0


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


async def podman(
    *args: str, input: bytes | None = None, limit: float | None = COMMAND_TIMEOUT
) -> Completed:
    """Run `podman ARGS`; RuntimeUnavailable if podman is missing or does not answer in time."""
    executable = shutil.which("podman")
    if executable is None:
        raise RuntimeUnavailable(
            "podman is not installed (apt-get install podman catatonit, or run scripts/engines.sh)"
        )
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise RuntimeUnavailable(f"cannot run podman: {e}") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(input), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise RuntimeUnavailable(
            f"`podman {' '.join(args[:3])}` did not finish within {limit:g}s"
        ) from None
    except BaseException:  # cancelled (e.g. `podman wait` of a pod being stopped): reap it
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await process.wait()
        raise
    code = await process.wait()  # at once: communicate() saw the process end
    logger.debug(
        "podman %s: exit %d in %.3fs", " ".join(args[:3]), code, time.monotonic() - started
    )
    return Completed(
        code, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")
    )


def podman_relay_host(settings: KubernetesSettings) -> str:
    """Where a Podman pod reaches ferry's relay: loopback on the host network (the default),
    otherwise the host as podman's bridge names it; `relay_host` in the settings wins."""
    host_network = settings.host_network is not False
    return settings.relay_host or (LOOPBACK_HOST if host_network else PODMAN_HOST)


def podman_playable(
    manifests: PodManifests, settings: KubernetesSettings, *, pulled: bool
) -> PodManifests:
    """`manifests` as `podman kube play` takes them, on the host network unless the settings say
    otherwise; `pulled`: ferry has just pulled the images, so kube play must not pull again."""
    manifests = for_podman(manifests, host_network=settings.host_network is not False)
    if pulled:
        for container in manifests.spec.containers:
            container.imagePullPolicy = "IfNotPresent"
    return manifests


def clean_stderr(text: str) -> str:
    """podman's stderr without its noise (syslog warnings, removal races of init containers)."""
    lines = [
        line
        for line in text.splitlines()
        if line.strip()
        and "failed to connect to syslog" not in line
        and "from database: no container with ID" not in line
    ]
    return "\n".join(lines).strip()


class PodmanPod:
    """One played pod (a PodBackend)."""

    def __init__(
        self,
        manifests: PodManifests,
        *,
        deadline: int | None,
        removals: set[asyncio.Task[list[str]]] | None = None,
        registration: RelayRegistration | None = None,
        check_images: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.manifests = manifests
        self.name = manifests.name
        self.description = f"podman pod {manifests.name}"
        self.container = f"{manifests.name}-{CONNECTOR_CONTAINER}"
        self._deadline = deadline
        self._secrets = podman_secrets(manifests) if manifests.has_files else {}
        self._removed = False
        self._remove_lock = asyncio.Lock()
        # The runtime's removals still under way; a pod whose main container exited is removed
        # there, while ferry goes on (the runtime's close() waits for them).
        self._removals = removals
        self._exited = False  # the main container ended on its own (not stopped by ferry)
        # Its heartbeat sidecar's report of the exit code, which comes before podman's.
        self._registration = registration
        # Images still to check (`ensure_image`), while the secrets are created.
        self._check_images = check_images
        self._stopped = False
        self._conmons: asyncio.Future[dict[str, int]] | None = None

    async def launch(self) -> None:
        """The secrets (`podman secret create`, side by side: 0.06-0.13 s for a single pod's
        three instead of 0.19-0.27 s one after another on a busy machine) and the images still
        to check, then the pod (`podman kube play`)."""
        manifests = self.manifests
        if self._check_images is not None:  # meanwhile: both are podman calls of their own
            await asyncio.gather(self._create_secrets(), self._check_images())
        else:
            await self._create_secrets()
        played = await podman(
            "kube", "play", "-", input=json.dumps(manifests.pod.to_dict()).encode()
        )
        if played.code != 0:
            raise RuntimeUnavailable(
                f"podman kube play of pod {manifests.name} failed: {clean_stderr(played.stderr)}"
            )
        # For the removal, looked up while the pod runs rather than when it is removed; by the
        # containers' names when `kube play` said the pod's id (its infra is `<id:12>-infra`).
        names = None
        if (pod_id := played_pod_id(played.stdout)) is not None:
            names = [f"{self.name}-{c.name}" for c in manifests.spec.containers]
            names.append(f"{pod_id[:12]}-infra")
        self._conmons = asyncio.ensure_future(conmon_pids(self.name, names))

    async def _create_secrets(self) -> None:
        labels = self.manifests.labels
        label_args = [arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")]
        secrets = list(self._secrets.items())
        results = await asyncio.gather(
            *(
                podman("secret", "create", *label_args, name, "-", input=json.dumps(doc).encode())
                for name, doc in secrets
            )
        )
        for (secret, _), created in zip(secrets, results, strict=True):
            if created.code != 0:
                raise RuntimeUnavailable(
                    f"podman could not create the secret {secret}: {clean_stderr(created.stderr)}"
                )

    async def wait_connector(self, on_running: Callable[[], None]) -> int:
        on_running()  # `podman kube play` returned: the containers run
        waiting = asyncio.ensure_future(self._wait())
        try:
            if self._deadline is None:
                return await waiting
            try:
                return await asyncio.wait_for(asyncio.shield(waiting), self._deadline)
            except TimeoutError:
                await self.stop(10.0)
                raise ConnectorCrashed(
                    f"{self.description}: DeadlineExceeded: the pod ran longer than its "
                    f"activeDeadlineSeconds ({self._deadline}s) and was stopped"
                ) from None
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)

    async def _wait(self) -> int:
        waiting = asyncio.ensure_future(
            podman("wait", "--interval", WAIT_INTERVAL, self.container, limit=None)
        )
        if await self._reported_success(waiting):
            self._exited = True
            return 0
        result = await waiting
        if result.code != 0:
            raise ConnectorCrashed(
                f"{self.description}: cannot wait for the connector container (it was removed "
                f"under ferry?): {clean_stderr(result.stderr)}"
            )
        text = result.stdout.strip().splitlines()
        code = int(text[-1]) if text and text[-1].lstrip("-").isdigit() else -1
        self._exited = True
        if code == 0:
            return 0  # not OOMKilled: nothing for `podman inspect` to add
        state = await podman(
            "inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}", self.container
        )
        oom, _, exit_text = state.stdout.strip().partition(" ")
        if state.code == 0 and exit_text.lstrip("-").isdigit():
            code = int(exit_text)
        if oom == "true":
            raise ConnectorCrashed(
                f"{self.description}: the connector was OOMKilled (exit code {code}); raise "
                "its memory limit (`resources: {memory: ...}` or `kubernetes.resources.limits`)",
                exit_code=code,
            )
        if code < 0:
            raise ConnectorCrashed(f"{self.description}: podman reported no exit code")
        return code

    async def _reported_success(self, waiting: asyncio.Future[Completed]) -> bool:
        """Whether the heartbeat sidecar reported exit code 0 before `podman wait` returned
        (then `waiting` is cancelled). podman learns the exit once its cleanup of the container
        ran, 0.2-0.4 s after the heartbeat's report; a failure still waits for podman, which
        tells whether the container was OOMKilled."""
        if self._registration is None:
            return False
        reported = asyncio.ensure_future(self._registration.wait_exit(None))
        try:
            either: set[asyncio.Future[Any]] = {waiting, reported}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: the podman wait goes with it
            waiting.cancel()
            raise
        finally:
            if not reported.done():
                reported.cancel()
        if reported.done() and not reported.cancelled() and reported.result() == 0:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            return True
        return False

    async def stop(self, grace: float) -> None:
        self._stopped = True
        result = await podman("pod", "stop", "-t", str(math.ceil(grace)), self.name)
        if result.code != 0 and "no pod with name" not in result.stderr:
            logger.warning("%s: stop failed: %s", self.description, clean_stderr(result.stderr))

    async def remove(self) -> None:
        async with self._remove_lock:
            if self._removed:
                return
            self._removed = True
            removal = self._remove_now()
            if self._exited and not self._stopped and self._removals is not None:
                task = asyncio.create_task(removal, name=f"remove {self.description}")
                self._removals.add(task)
                task.add_done_callback(self._removals.discard)
            else:
                await removal

    async def _remove_now(self) -> list[str]:
        conmons = None
        if self._conmons is not None:
            with contextlib.suppress(FerryError):
                conmons = await asyncio.shield(self._conmons)
        return await remove_pod_resources(self.name, list(self._secrets), conmons=conmons)


def pod_teardown(name: str) -> tuple[list[str], list[str]]:
    """The podman commands that remove a pod: stop it, then remove it.

    Whatever still runs is killed at once (`terminate` stopped the pod gracefully before; after
    the connector exited only the pause container and finishing sidecars are left; `ferry gc`
    removes what nobody needs). Measured on podman 4.3: `pod stop -t 0` then `pod rm -f` takes
    0.2-0.3 s, `pod rm -f -t 0` 3.3-3.5 s; `pod rm` right after a stop that killed containers
    also takes 3.3 s at times, unless their cleanup is waited for (`settle`).
    """
    return ["pod", "stop", "-t", "0", name], ["pod", "rm", "-f", name]


def played_pod_id(output: str) -> str | None:
    """The pod's id in the output of `podman kube play` (`Pod:` then the id on its own line)."""
    lines = [line.strip() for line in output.splitlines()]
    for label, value in itertools.pairwise(lines):
        if label == "Pod:" and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
    return None


async def conmon_pids(name: str, containers: Sequence[str] | None = None) -> dict[str, int]:
    """Container name -> pid of its conmon, for every container of the pod `name` (infra too):
    `containers`, its containers' names if known (one podman call instead of two), else those
    `podman ps` lists."""
    if containers:
        found = await _conmons_of(containers)
        if len(found) == len(containers):  # else a name was wrong, or one is gone already
            return found
    listed = await podman("ps", "--all", "--quiet", "--filter", f"pod={name}")
    ids = listed.stdout.split()
    if listed.code != 0 or not ids:
        return {}
    return await _conmons_of(ids)


async def _conmons_of(containers: Sequence[str]) -> dict[str, int]:
    inspected = await podman("inspect", "--format", "{{.Name}} {{.State.ConmonPid}}", *containers)
    rows = (line.rpartition(" ") for line in inspected.stdout.splitlines())
    return {container: int(pid) for container, _, pid in rows if pid.isdigit() and int(pid) > 0}


async def settle(pids: Iterable[int], timeout: float = SETTLE_TIMEOUT) -> None:  # noqa: ASYNC109
    """Wait (`timeout` seconds at most) until the conmon processes `pids` are gone.

    A conmon outlives its container while podman's cleanup of it (the exit command conmon runs)
    is under way; `pod rm` meanwhile finds the pod's cgroup busy and retries for 3 s until it
    TERMs that cleanup. Measured here: `pod rm` 3.3-3.6 s right after `pod kill` or
    `pod stop -t 0`, 0.1-0.3 s once the conmons are gone. A container that ends on its own is
    cleaned up at once; one that is stopped, with all the others at the same moment: the
    conmons of a pod killed with 4 containers took 1.5-1.9 s to be gone.
    """
    waiting = list(pids)
    deadline = asyncio.get_running_loop().time() + timeout
    while any(map(_alive, waiting)) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


async def remove_pod_resources(
    name: str, secrets: Sequence[str], *, conmons: Mapping[str, int] | None = None
) -> list[str]:
    """Remove a pod, its `secrets` and their volumes (named like them); the problems.

    `conmons` (`conmon_pids`, looked up now if not given): the pod's containers get LINGER
    seconds to end on their own and be cleaned up (`settle`) before the pod is stopped (unless
    podman already stopped it). The
    secret goes meanwhile (`kube play` copied it into the volume); the volume only once the pod
    is gone (`volume rm -f` would remove the containers using it).
    """
    secrets_rm = asyncio.ensure_future(podman("secret", "rm", *secrets)) if secrets else None
    if conmons is None:
        conmons = await conmon_pids(name)
    own = [pid for container, pid in conmons.items() if not container.endswith("-infra")]
    await settle(own, LINGER)
    stop, remove = pod_teardown(name)
    # Once its last container exited, podman stops the pod itself (kube play's exit policy): its
    # infra too, after which `pod stop` has nothing left to do.
    if not conmons or any(map(_alive, conmons.values())):
        await podman(*stop)
        await settle(conmons.values())
    results = {"pod": await podman(*remove)}
    if secrets_rm is not None:
        results["volume"] = await podman("volume", "rm", "-f", *secrets)
        results["secret"] = await secrets_rm
    problems = []
    for what, result in results.items():
        gone = f"no {what} with name" in result.stderr or f"no such {what}" in result.stderr
        if result.code != 0 and not gone:
            problems.append(f"{what} rm: {clean_stderr(result.stderr)}")
    for problem in problems:
        logger.warning("podman pod %s: %s", name, problem)
    return problems


class PodmanRuntime:
    """Runs connectors as podman pods (implements Runtime)."""

    name = "podman"

    def __init__(self, *, sidecar_image: str | None = None) -> None:
        self.sidecar_image = resolve_sidecar_image(sidecar_image)
        self._ready_images: set[str] = set()
        self._configs: dict[str, Mapping[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.removals: set[asyncio.Task[list[str]]] = set()

    async def start(self, invocation: ConnectorInvocation, log: LogSink) -> PodProcess:
        ref = invocation.connector
        options = ref.options
        settings = options.kubernetes
        sidecar_image = settings.sidecar_image or self.sidecar_image
        await asyncio.gather(
            self.ensure_image(ref.target, options.pull),
            self.ensure_image(sidecar_image, "if-not-present"),
        )
        entrypoint = None
        if options.entrypoint and options.entrypoint.strip() == "auto":
            config = await self.image_config(ref.target)
            entrypoint = derive_entrypoint(config)
            if entrypoint is not None:
                logger.info(
                    "%s has no AIRBYTE_ENTRYPOINT; entrypoint: auto runs its ENTRYPOINT (else CMD): %s",
                    ref.target,
                    entrypoint,
                )

        host = podman_relay_host(settings)
        listener = await shared_listener()

        def make_pod(registration: RelayRegistration) -> PodmanPod:
            manifests = build_manifests(
                invocation,
                token=registration.token,
                endpoint=listener.endpoint(host),
                settings=settings,
                entrypoint=entrypoint,
                extra_labels=owner_labels(),
                sidecar_image=sidecar_image,
            )
            manifests = podman_playable(manifests, settings, pulled=options.pull == "always")
            # Without the init container: the wrapper and the relays make the FIFOs whichever
            # comes first, the heartbeat opens the directory to other users; an init container
            # runs to its end before the others start (0.35 s of `podman kube play`).
            manifests.spec.initContainers = None
            return PodmanPod(
                manifests,
                deadline=settings.active_deadline_seconds,
                removals=self.removals,
                registration=registration,
            )

        return await start_pod(invocation, log, listener, make_pod)

    async def ensure_image(self, image: str, policy: str) -> None:
        if image in self._ready_images and policy != "always":
            return
        lock = self._locks.setdefault(image, asyncio.Lock())
        async with lock:
            if image in self._ready_images and policy != "always":
                return
            present = policy != "always" and (await podman("image", "exists", image)).code == 0
            if not present:
                if policy == "never":
                    raise ImageUnavailable(
                        f"image {image} is not in podman's storage and the pull policy is "
                        "'never': build or load it (podman build / podman load), or set "
                        "`pull: if-not-present`"
                    )
                pulled = await podman("pull", "--quiet", image, limit=None)
                if pulled.code != 0:
                    raise ImageUnavailable(
                        f"image {image} could not be pulled by podman (pull policy '{policy}'): "
                        f"{clean_stderr(pulled.stderr)}; check the name and that its registry "
                        "is reachable (`podman login`), or load the image and set `pull: never`"
                    )
            self._ready_images.add(image)

    async def image_config(self, image: str) -> Mapping[str, Any]:
        cached = self._configs.get(image)
        if cached is not None:
            return cached
        result = await podman("image", "inspect", "--format", "{{json .Config}}", image)
        if result.code != 0:
            raise ImageUnavailable(f"cannot inspect image {image}: {clean_stderr(result.stderr)}")
        try:
            config: Mapping[str, Any] = json.loads(result.stdout) or {}
        except json.JSONDecodeError:
            config = {}
        self._configs[image] = config
        return config

    async def fingerprint(self, ref: ConnectorRef) -> str | None:
        """The image's id after the pull policy is applied (as `start` applies it), and the
        `entrypoint` option (a pod always runs the image under ferry's wrapper).

        An image already there needs only its id (one podman call instead of two)."""
        inspected = await self._image_id(ref.target)
        if inspected.code != 0 or ref.options.pull == "always":
            await self.ensure_image(ref.target, ref.options.pull)
            inspected = await self._image_id(ref.target)
        else:
            self._ready_images.add(ref.target)
        image_id = inspected.stdout.strip()
        if inspected.code != 0 or not image_id:
            return None
        return fingerprint_of(ref, image_id=image_id, entrypoint=ref.options.entrypoint)

    async def _image_id(self, image: str) -> Completed:
        return await podman("image", "inspect", "--format", "{{.Id}}", image)

    async def sweep_orphans(self) -> list[str]:
        return []  # pods stop themselves once ferry is gone (heartbeat); `ferry gc` removes them

    async def close(self) -> None:
        """Finish removing the pods whose connectors exited (the listener is shared)."""
        while self.removals:
            await asyncio.gather(*self.removals, return_exceptions=True)
