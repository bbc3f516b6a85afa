"""The relay layer: a connector in a container, its stdio relayed to ferry over TCP.

Inside the container (generated POSIX sh, no Python there):
- `wrapper`: the connector container's command (`wrapper_command`), one template for every
  runtime, which runs the image's entrypoint with its stdio on FIFOs in a shared directory;
- `sidecars`: the relay and heartbeat sidecar commands (`sidecar_commands`);
- `layout`: the files of the shared directory and the no-`$(`/`$$` rule for generated commands.

On ferry's side:
- `listener`: ONE TCP port per ferry process, a token per connector (`shared_listener`,
  `RelayListener.register`), whose registration exposes the connector's stdout/stdin;
- `heartbeat`: the HTTP endpoint on the same port through which the heartbeat sidecar learns
  that ferry is alive and reports the connector's exit code.

The runtimes that use it (Docker relay mode, Podman, Kubernetes) do, per connector run:

    listener = await shared_listener()
    reg = listener.register(name, reads_stdin=inv.reads_stdin, log=log)
    main = wrapper_command(protocol_args(...), image=image, reads_stdin=..., entrypoint=...)
    sidecars = sidecar_commands(token=reg.token, endpoint=listener.endpoint(HOST),
                                reads_stdin=...)
    # start containers sharing IO_DIR, then hand reg to ferry.runtimes.relayed.PodProcess,
    # which exposes reg.stdout / reg.stdin and waits for the connector container's exit code
"""

from ferry.relay.heartbeat import exit_path, heartbeat_path, request_status
from ferry.relay.layout import (
    EXIT_FILE,
    IO_DIR,
    NO_ENTRYPOINT_EXIT_CODE,
    STDERR,
    STDIN,
    STDOUT,
    TERMINATE_FILE,
    TERMINATED_EXIT_CODE,
    check_portable,
    io_path,
    parse_exit_code,
    read_exit_file,
    unsafe_for_kubernetes,
)
from ferry.relay.listener import (
    DOCKER_BRIDGE_HOST,
    HANDSHAKE_MAGIC,
    LOOPBACK_HOST,
    PODMAN_HOST,
    KeepAlive,
    RelayListener,
    RelayReader,
    RelayRegistration,
    RelayWriter,
    handshake_line,
    shared_listener,
)
from ferry.relay.sidecars import (
    ENV_SIDECAR_IMAGE,
    SIDECAR_IMAGE,
    HeartbeatSettings,
    RelayEndpoint,
    check_relay_host,
    heartbeat_sidecar_command,
    relay_sidecar_command,
    sidecar_commands,
    sidecar_image,
)
from ferry.relay.wrapper import (
    WrapperCommand,
    derive_entrypoint,
    encode_entrypoint,
    entrypoint_from_argv,
    wrapper_command,
    wrapper_script,
)

__all__ = [
    "DOCKER_BRIDGE_HOST",
    "ENV_SIDECAR_IMAGE",
    "EXIT_FILE",
    "HANDSHAKE_MAGIC",
    "IO_DIR",
    "LOOPBACK_HOST",
    "NO_ENTRYPOINT_EXIT_CODE",
    "PODMAN_HOST",
    "SIDECAR_IMAGE",
    "STDERR",
    "STDIN",
    "STDOUT",
    "TERMINATED_EXIT_CODE",
    "TERMINATE_FILE",
    "HeartbeatSettings",
    "KeepAlive",
    "RelayEndpoint",
    "RelayListener",
    "RelayReader",
    "RelayRegistration",
    "RelayWriter",
    "WrapperCommand",
    "check_portable",
    "check_relay_host",
    "derive_entrypoint",
    "encode_entrypoint",
    "entrypoint_from_argv",
    "exit_path",
    "handshake_line",
    "heartbeat_path",
    "heartbeat_sidecar_command",
    "io_path",
    "parse_exit_code",
    "read_exit_file",
    "relay_sidecar_command",
    "request_status",
    "shared_listener",
    "sidecar_commands",
    "sidecar_image",
    "unsafe_for_kubernetes",
    "wrapper_command",
    "wrapper_script",
]
