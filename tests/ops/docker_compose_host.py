"""docker-compose 1.29 for the container test's host-networked stack: `python3 THIS ARGS...`
with the Python that docker-compose is installed for (its script's shebang).

docker-compose.yml publishes the api's port (`ports:`). Under host networking a published port
has no meaning: Docker 20.10 discards it, with the warning "Published ports are discarded when
using host network mode", and the container listens on the host's own interfaces. But
docker-compose 1.29 never gets that far: docker-py, which it creates containers with, refuses the
pair on the client side ('"host" network_mode is incompatible with port_bindings'), and an
override file cannot help, since it can add to a `ports:` list but not remove from it. So this
runs docker-compose's own entry point with docker-py doing what the engine would do (a
host-networked container gets no port bindings) and changes nothing else.
"""

import sys

from compose.cli.main import main
from docker.types.containers import HostConfig

_host_config_init = HostConfig.__init__


def _host_config_without_ports_on_host_network(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    if kwargs.get("network_mode") == "host":
        kwargs["port_bindings"] = None
    _host_config_init(self, *args, **kwargs)


HostConfig.__init__ = _host_config_without_ports_on_host_network  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv[0] = "docker-compose"
    sys.exit(main())
