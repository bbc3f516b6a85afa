"""Docker relay mode: a connector in a "pod" of Docker containers, its stdio relayed to ferry.

`runtime: docker` with `relay: true` in the connector's block (or `ferry sync --relay`) runs the
connector the way the Kubernetes and Podman runtimes do, with the relay layer unchanged
(`ferry.relay`): ferry's wrapper is the connector container's command, relay sidecars carry
its stdin/stdout/stderr FIFOs to ferry's ONE relay listener with the connector's token, and a
heartbeat sidecar stops the connector when ferry is gone. Per connector run, all labelled like
plain containers (`RunLabels.as_labels()` + `owner.owner_labels()` + `ferry.part`), all AutoRemove,
the engine's init as PID 1 and the `none` log driver:

    <name>-sandbox       the sidecar image running SANDBOX_SCRIPT: it owns the network
                         namespace and the shared directory (an anonymous volume at IO_DIR),
                         like a pod's infra ("pause") container
    <name>-connector     the connector image running `wrapper_command(...)`, protocol arguments,
                         FERRY_* env (ferry's values win over `env:`), `volumes:` binds,
                         `resources:` limits; config files uploaded with put_archive as in plain
                         mode; network_mode=container:<sandbox>, volumes_from=<sandbox>
    <name>-relay-stdout  the sidecars of `sidecar_commands(...)`, sharing the sandbox's network
    <name>-relay-stderr  namespace and volume the same way (relay-stdin for destinations only)
    <name>-relay-stdin
    <name>-heartbeat

Why a sandbox and not `network_mode=container:<connector>`: Docker tears the network of a
container down as soon as it exits, even while other containers still live in its namespace
(measured: "Network is unreachable" a moment after the owner exited). The connector exits while
its relays still carry its last bytes to ferry and the heartbeat still reports its exit code, so
the namespace must belong to a container that outlives it: exactly why pods have one. The
sandbox exits on its own once the wrapper wrote `exit` in the shared directory and no relay
connection to ferry's port is left in the namespace (read from /proc/net/tcp: established,
connecting or still sending); when the termination marker exists too (ferry is gone or stopped
the run: nobody needs the bytes) after SANDBOX_AFTER_STOP seconds at most, and SANDBOX_LINGER
seconds after a marker without any `exit`. So when ferry is killed or frozen, every container
exits within the heartbeat budget + the wrapper's grace (measured: 4-5 s after SIGKILL, ~30 s
after SIGSTOP, where only the heartbeat can tell). Normally ferry removes them all itself.

The FIFOs exist before any container starts: the sandbox is created, then the shared directory
(mode 0777, so a connector running as another user can write `exit`) and its FIFOs (0666) are
uploaded into its fresh volume with put_archive (a tar of a directory and FIFO entries), and only
then is anything started: the init step of a pod without an init container. The wrapper and the
relays would create missing FIFOs themselves too (the relay layer's rule); here they never have
to.

Where the sidecars reach ferry: FERRY_DOCKER_RELAY_HOST if set; 127.0.0.1 for `network: host`;
else the gateway of the connector's Docker network (`bridge` by default: 172.17.0.1, the wrapper
layer's DOCKER_BRIDGE_HOST, which is also the fallback). The listener (`shared_listener()`) binds
FERRY_RELAY_BIND, by default 0.0.0.0, which the bridge reaches; a loopback bind is refused with
a ConfigError, since no container could connect (binding the bridge address 172.17.0.1 works and
keeps the port off other interfaces). A remote engine (DOCKER_HOST=tcp://...) needs
FERRY_DOCKER_RELAY_HOST set to an address of ferry's machine that its containers can reach.

Entrypoint: the wrapper evals AIRBYTE_ENTRYPOINT. An explicit `entrypoint: <command>` overrides
it; `entrypoint: auto` on an image without AIRBYTE_ENTRYPOINT derives it from the image's config
(`ferry.relay.derive_entrypoint`, Docker's own rule: its ENTRYPOINT when it has one, the protocol
arguments replacing CMD; else its CMD), says so in the log, and passes it as the wrapper's override. Without either, the
wrapper exits 127 with `AIRBYTE_ENTRYPOINT is not set in image <image>: ...`, which reaches the
user through the stderr relay as the error's last stderr lines.

The ConnectorProcess is the pods' `PodProcess` on a `DockerPod` backend: stdout/stdin are the
relay registration's channels; `wait()` returns the connector container's exit status (from the
engine's wait, registered before start) once stderr is drained, and fails with ConnectorCrashed
when the channels end without an exit code; a relay sidecar that exits before its channel
connected fails the run at once with its own last words; `terminate()` withdraws the token (the
heartbeat then stops the connector), `docker stop`s the connector and removes every container
(the anonymous volume goes with them). Like a plain DockerProcess, once terminated its stdout
ends, stdin writes are a broken pipe and `wait()` gives the exit status (`PodProcess` does that
for every pod runtime), so a cancelled sync ends as cancelled (130), not crashed.

What relay mode costs is start-up: five or six containers per connector run instead of one;
its data path is faster than plain mode's attach streams, and no byte goes through dockerd
(benchmarks/README.md, "Design measurements").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import logging
import os
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import docker.errors

from ferry.errors import (
    ConfigError,
    ConnectorCrashed,
    FerryError,
    InternalError,
    RuntimeUnavailable,
)
from ferry.relay import (
    DOCKER_BRIDGE_HOST,
    IO_DIR,
    LOOPBACK_HOST,
    STDERR,
    STDIN,
    STDOUT,
    RelayEndpoint,
    RelayListener,
    RelayRegistration,
    check_portable,
    check_relay_host,
    derive_entrypoint,
    shared_listener,
    sidecar_commands,
    sidecar_image,
    wrapper_command,
)
from ferry.runtimes.base import (
    ConnectorInvocation,
    ConnectorOptions,
    LogSink,
    StderrLines,
    StderrTail,
    protocol_args,
)
from ferry.runtimes.docker.attach import OutputStream
from ferry.runtimes.docker.containers import (
    FILES_DIR,
    container_name,
    options_host_config,
    standard_host_config,
)
from ferry.runtimes.docker.endpoint import Endpoint
from ferry.runtimes.docker.engine import DockerEngine, engine_error
from ferry.runtimes.owner import owner_labels
from ferry.runtimes.relayed import PodProcess, start_pod

logger = logging.getLogger(__name__)

ENV_RELAY_HOST = "FERRY_DOCKER_RELAY_HOST"
PART_LABEL = "ferry.part"
SANDBOX = "sandbox"
CONNECTOR = "connector"
HEARTBEAT = "heartbeat"
# After the termination marker, the sandbox waits at most this long for the wrapper's exit code
# (the wrapper's grace is 10 s) and, once both exist, this long for relay connections to end.
SANDBOX_LINGER = 30
SANDBOX_AFTER_STOP = 3
# How long remove() waits for a container the engine is already removing (AutoRemove).
REMOVE_TIMEOUT = 30.0
# TCP states of /proc/net/tcp in which a relay connection is still alive or still sending:
# ESTABLISHED, SYN_SENT, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING.
BUSY_TCP_STATES = ("01", "02", "04", "08", "09", "0B")

SANDBOX_SCRIPT = """\
ferry_dir=$1
ferry_port=$2
ferry_linger=$3
ferry_after=$4
ferry_waited=
ferry_done=
trap 'exit 0' TERM INT HUP
ferry_busy() {
  for ferry_table in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$ferry_table" ] || continue
    while read -r ferry_sl ferry_local ferry_remote ferry_state ferry_rest; do
      case $ferry_remote in
        *:$ferry_port)
          case " $FERRY_BUSY_STATES " in
            *" $ferry_state "*) return 0 ;;
          esac
          ;;
      esac
    done <"$ferry_table"
  done
  return 1
}
while :; do
  if [ -e "$ferry_dir/exit" ]; then
    ferry_busy || exit 0
    if [ -e "$ferry_dir/terminate" ]; then
      ferry_done=${ferry_done}x
      [ "${#ferry_done}" -ge "$ferry_after" ] && exit 0
    fi
  elif [ -e "$ferry_dir/terminate" ]; then
    ferry_waited=${ferry_waited}x
    [ "${#ferry_waited}" -ge "$ferry_linger" ] && exit 0
  fi
  sleep 1 &
  wait
done
"""


def sandbox_command(
    port: int,
    io_dir: str = IO_DIR,
    linger: int = SANDBOX_LINGER,
    after_stop: int = SANDBOX_AFTER_STOP,
) -> list[str]:
    """The sandbox's command: idle until the connector is done and its relays have finished.

    `port` is ferry's relay port (the relays' connections are looked up by it); `linger` bounds
    the wait for the wrapper's exit code after the termination marker, `after_stop` the wait for
    relay connections once both exist (ferry is gone or stopping: nobody needs the bytes).
    """
    argv = ["/bin/sh", "-c", SANDBOX_SCRIPT, "ferry-sandbox", io_dir, f"{port:04X}"]
    argv += [str(linger), str(after_stop)]
    check_portable(argv, "the sandbox's command")
    return argv


def fifo_archive(reads_stdin: bool, io_dir: str = IO_DIR) -> bytes:
    """A tar of the shared directory (0777) and its FIFOs (0666), extracted at `/`."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(io_dir.strip("/"))
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o777
        directory.mtime = now
        tar.addfile(directory)
        for channel in [STDOUT, STDERR] + ([STDIN] if reads_stdin else []):
            fifo = tarfile.TarInfo(f"{io_dir.strip('/')}/{channel}")
            fifo.type = tarfile.FIFOTYPE
            fifo.mode = 0o666
            fifo.mtime = now
            tar.addfile(fifo)
    return buffer.getvalue()


def entrypoint_override(
    image: str, config: Mapping[str, Any], options: ConnectorOptions
) -> str | None:
    """The wrapper's entrypoint override: an explicit `entrypoint:`, or the derived one for auto."""
    choice = (options.entrypoint or "").strip()
    if not choice:
        return None
    if choice != "auto":
        return choice
    derived = derive_entrypoint(config)
    if derived is not None:
        logger.info(
            "%s has no AIRBYTE_ENTRYPOINT; entrypoint: auto runs what the image's config says "
            "(docker image inspect): %s",
            image,
            derived,
        )
    return derived


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def relay_host(engine: DockerEngine, network: str | None) -> str:
    """The address at which containers on `network` reach ferry's machine."""
    override = os.environ.get(ENV_RELAY_HOST, "").strip()
    if override:
        check_relay_host(override, ENV_RELAY_HOST)
        return override
    if network == "host":
        return LOOPBACK_HOST
    if network == "none":
        raise ConfigError(
            "relay mode needs a network: its sidecars connect to ferry's relay port, but the "
            "connector's block says `network: none`; drop `relay: true` or choose a network"
        )
    endpoint = await engine.endpoint()
    if endpoint.unix_path is None and not _is_loopback(endpoint.host):
        logger.warning(
            "the Docker engine at %s is remote: its containers may not reach ferry at the "
            "network's gateway; set %s to an address of this machine they can reach",
            endpoint.url,
            ENV_RELAY_HOST,
        )
    if network is not None and network.startswith("container:"):
        return DOCKER_BRIDGE_HOST
    gateway = await _network_gateway(engine, network or "bridge")
    return gateway or DOCKER_BRIDGE_HOST


async def _network_gateway(engine: DockerEngine, network: str) -> str | None:
    api = await engine.api()
    try:
        info: Mapping[str, Any] = await asyncio.to_thread(api.inspect_network, network)
    except docker.errors.NotFound:
        raise ConfigError(
            f"Docker network {network!r} does not exist (the connector's `network:` option)"
        ) from None
    except Exception as e:
        raise engine_error(f"inspect network {network}", e) from None
    for entry in (info.get("IPAM") or {}).get("Config") or []:
        gateway = str(entry.get("Gateway") or "")
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(gateway).version == 4:
                return gateway
    return None


def check_reachable(listener: RelayListener, host: str) -> None:
    """A listener bound to loopback cannot be reached from containers (unless they use host's)."""
    if _is_loopback(listener.bind_host) and not _is_loopback(host):
        raise ConfigError(
            f"ferry's relay listener is bound to {listener.bind_host} (FERRY_RELAY_BIND), which "
            f"Docker containers cannot reach at {host}: unset FERRY_RELAY_BIND (0.0.0.0) or bind "
            f"the bridge address ({DOCKER_BRIDGE_HOST})"
        )


class DockerPod:
    """The containers of one relayed connector run (a PodBackend for `PodProcess`)."""

    def __init__(
        self,
        engine: DockerEngine,
        endpoint: Endpoint,
        invocation: ConnectorInvocation,
        registration: RelayRegistration,
        *,
        args: Sequence[str],
        entrypoint: str | None,
        relay: RelayEndpoint,
        image_config: Mapping[str, Any],
        sidecar_image: str,
    ) -> None:
        self._engine = engine
        self._endpoint = endpoint
        self._invocation = invocation
        self._registration = registration
        self._image_config = image_config
        self.sidecar_image = sidecar_image
        self.name = container_name(invocation)
        self.description = f"docker relay pod {self.name}"
        ref = invocation.connector
        check_portable(args, "the connector's arguments")
        self.wrapper = wrapper_command(
            args, image=ref.target, reads_stdin=invocation.reads_stdin, entrypoint=entrypoint
        )
        self.sidecars = sidecar_commands(
            token=registration.token, endpoint=relay, reads_stdin=invocation.reads_stdin
        )
        self.sandbox = sandbox_command(relay.port)
        self.parts = [SANDBOX, CONNECTOR, *self.sidecars]
        self.ids: dict[str, str] = {}
        self._closers: list[Callable[[], None]] = []
        self._main_exit: asyncio.Task[int] | None = None
        self._sidecar_exits: dict[asyncio.Task[int], str] = {}
        self._tails: dict[str, StderrTail] = {}
        self._removed = False
        self._remove_lock = asyncio.Lock()

    def container_name(self, part: str) -> str:
        return f"{self.name}-{part}"

    def labels(self, part: str) -> dict[str, str]:
        return {**self._invocation.labels.as_labels(), **owner_labels(), PART_LABEL: part}

    async def launch(self) -> None:
        """Create everything, put the FIFOs and files in, attach, start. Cleanup is the caller's."""
        api = await self._engine.api()
        options = self._invocation.connector.options
        sandbox_host: dict[str, Any] = {}
        if options.network:
            sandbox_host["network_mode"] = options.network
        sandbox_id = await self._create(
            api,
            SANDBOX,
            self.sidecar_image,
            self.sandbox,
            environment={"FERRY_BUSY_STATES": " ".join(BUSY_TCP_STATES)},
            volumes=[IO_DIR],
            host_config=standard_host_config(**sandbox_host),
        )
        fifos = fifo_archive(self._invocation.reads_stdin)
        await self._engine.put_archive(sandbox_id, fifos, f"the FIFOs in {IO_DIR}")
        await self._engine.call("start the relay sandbox", api.start, sandbox_id)

        shared = {"network_mode": f"container:{sandbox_id}", "volumes_from": [f"{sandbox_id}:rw"]}
        main_host = standard_host_config(**shared, **options_host_config(options))
        environment = {**self._invocation.environment, **self.wrapper.env}
        creations = [
            self._create(
                api,
                CONNECTOR,
                self._invocation.connector.target,
                self.wrapper.argv,
                environment=environment,
                host_config=main_host,
            )
        ]
        creations += [
            self._create(
                api, part, self.sidecar_image, argv, host_config=standard_host_config(**shared)
            )
            for part, argv in self.sidecars.items()
        ]
        await _gather_all(creations)
        main_id = self.ids[CONNECTOR]
        if self._invocation.files:
            await self._engine.upload_files(main_id, self._invocation.files, self._image_config)
        self._main_exit = await self._endpoint.start_wait(main_id, "removed")
        self._closers.append(_canceller(self._main_exit))
        for part in self.sidecars:
            container_id = self.ids[part]
            tail = self._tails[part] = StderrTail(10)
            output = OutputStream()
            output.discard()  # sidecars write nothing to stdout; drop it if they ever do
            attach = await self._endpoint.open_attach(
                container_id, output, StderrLines(self._sidecar_log(part), tail)
            )
            self._closers.append(attach.close)
            waiting = await self._endpoint.start_wait(container_id, "removed")
            self._closers.append(_canceller(waiting))
            self._sidecar_exits[waiting] = part
        await _gather_all(
            [
                self._engine.call(f"start the {part} container", api.start, self.ids[part])
                for part in [*self.sidecars, CONNECTOR]
            ]
        )

    def _sidecar_log(self, part: str) -> Callable[[str], None]:
        def log(line: str) -> None:
            logger.info("%s %s: %s", self.name, part, line)

        return log

    async def _create(
        self,
        api: Any,
        part: str,
        image: str,
        argv: Sequence[str],
        *,
        host_config: Mapping[str, Any],
        environment: Mapping[str, str] | None = None,
        volumes: list[str] | None = None,
    ) -> str:
        created = await self._engine.call(
            f"create the {part} container from {image}",
            api.create_container,
            image,
            entrypoint=list(argv),
            environment=dict(environment) if environment else None,
            labels=self.labels(part),
            name=self.container_name(part),
            volumes=volumes,
            host_config=api.create_host_config(**host_config),
        )
        container_id = str(created["Id"])
        self.ids[part] = container_id
        return container_id

    # -- PodBackend -------------------------------------------------------------------------------

    async def wait_connector(self, on_running: Callable[[], None]) -> int:
        """The connector container's exit status; fails early when a relay sidecar died unconnected."""
        main_exit = self._main_exit
        if main_exit is None:
            raise InternalError(f"{self.description}: waited for before it was launched")
        on_running()
        pending: set[asyncio.Task[int]] = {main_exit, *self._sidecar_exits}
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if main_exit in done:
                return main_exit.result()
            for task in done:
                self._check_sidecar(self._sidecar_exits[task], task)

    def _check_sidecar(self, part: str, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.warning("%s: lost track of the %s sidecar: %s", self.description, part, error)
            return
        channel = part.removeprefix("relay-")
        if part == HEARTBEAT or self._registration.connected().get(channel, True):
            return
        lines = "\n".join(self._tails[part].lines())
        raise ConnectorCrashed(
            f"{self.description}: its {part} sidecar exited with code {task.result()} before it "
            f"connected to ferry's relay port (image {self.sidecar_image}: it needs sh, socat "
            "and busybox; containers must reach ferry at the relay address)",
            exit_code=task.result(),
            stderr_tail=lines,
        )

    async def stop(self, grace: float) -> None:
        """`docker stop -t grace` of the connector container (TERM to the wrapper, then KILL)."""
        container_id = self.ids.get(CONNECTOR)
        if container_id is None:
            return
        await self._engine.stop(container_id, grace)
        if self._main_exit is not None:  # learn its exit status before everything is removed
            with contextlib.suppress(TimeoutError, FerryError):
                await asyncio.wait_for(asyncio.shield(self._main_exit), REMOVE_TIMEOUT)

    async def remove(self) -> None:
        """Remove every container (the sandbox last, with its volume). Idempotent, never raises."""
        async with self._remove_lock:
            if self._removed:
                return
            self._removed = True
            for close in self._closers:
                close()
            others = [part for part in self.parts if part != SANDBOX]
            await asyncio.gather(*(self._remove_part(part) for part in others))
            await self._remove_part(SANDBOX)

    async def _remove_part(self, part: str) -> None:
        target = self.ids.get(part) or self.container_name(part)
        try:
            await self._engine.remove(target, volumes=True)
            await self._gone(target)
        except (FerryError, OSError) as e:
            logger.warning("%s: could not remove the %s container: %s", self.description, part, e)

    async def _gone(self, target: str) -> None:
        api = await self._engine.api()
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                await asyncio.to_thread(api.inspect_container, target)
            except docker.errors.NotFound:
                return
            except Exception as e:
                raise engine_error("inspect a container", e) from None
            await asyncio.sleep(0.1)
        raise RuntimeUnavailable(f"container {target} was still there after {REMOVE_TIMEOUT:g}s")


async def start_relayed(
    engine: DockerEngine,
    invocation: ConnectorInvocation,
    log: LogSink,
    *,
    args: Sequence[str] | None = None,
) -> PodProcess:
    """Start `invocation` in relay mode on `engine`.

    `args` replaces the connector's arguments (`[*ref.args, verb, --config, ...]`), e.g. to run
    an image's entrypoint with arbitrary arguments through the wrapper.
    """
    ref = invocation.connector
    options = ref.options
    endpoint = await engine.endpoint()
    side_image = sidecar_image()
    configs = await asyncio.gather(
        engine.image_config(ref.target, options.pull),
        engine.image_config(side_image, "if-not-present"),
    )
    image_config: Mapping[str, Any] = configs[0]
    entrypoint = entrypoint_override(ref.target, image_config, options)
    paths = {name: f"{FILES_DIR}/{name}.json" for name in invocation.files}
    if args is None:
        args = [*ref.args, *protocol_args(invocation.verb, paths)]
    listener = await shared_listener()
    host = await relay_host(engine, options.network)
    check_reachable(listener, host)

    def make_pod(registration: RelayRegistration) -> DockerPod:
        return DockerPod(
            engine,
            endpoint,
            invocation,
            registration,
            args=args,
            entrypoint=entrypoint,
            relay=listener.endpoint(host),
            image_config=image_config,
            sidecar_image=side_image,
        )

    return await start_pod(invocation, log, listener, make_pod)


async def _gather_all(calls: Sequence[Any]) -> None:
    """Await every call (even when one fails, so no creation is left running), then raise."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _canceller(task: asyncio.Task[int]) -> Callable[[], None]:
    def cancel() -> None:
        task.cancel()

    return cancel
