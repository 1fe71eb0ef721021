# Sourced by scripts/start: refuse, in one sentence, a port that something else holds.
# Runs before anything slow (no venv needed: the system python3 is enough).

# Usage: require_free_port NAME HOST PORT   (NAME is the setting that chose PORT)
require_free_port() {
    "${PYTHON:-python3}" - "$@" <<'PY'
import socket
import sys

name, host, port = sys.argv[1:4]
if not port.isdigit() or not 0 < int(port) < 65536:
    sys.exit(f"scripts/start: {name}={port} is not a port number (1-65535)")
try:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port left in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
except socket.gaierror as exc:
    sys.exit(f"scripts/start: HOST={host} is not an address of this machine ({exc.strerror})")
except OSError as exc:
    sys.exit(f"scripts/start: port {port} ({name}) on {host} is already in use by another "
             f"program ({exc.strerror}); stop it or choose another port, for example "
             f"{name}={int(port) + 10} scripts/start")
PY
}
