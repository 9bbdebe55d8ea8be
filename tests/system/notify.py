"""notify.py — a stand-in for systemd's side of Type=notify in the system
tests (test_systemd.py, test_deb.py): an AF_UNIX datagram socket at the path
given to the gateway as $NOTIFY_SOCKET, read all the time, every line kept
with its arrival time (time.monotonic())."""
import socket
import threading
import time


class NotifySocket:
    """What systemd does for Type=notify: a datagram socket at $NOTIFY_SOCKET,
    read all the time (a full queue would block the sender)."""

    def __init__(self, path):
        self.path = str(path)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.s.settimeout(0.05)
        self.msgs = []
        self.lock = threading.Lock()
        self.done = False
        self.thr = threading.Thread(target=self._run, daemon=True)
        self.thr.start()

    def _run(self):
        while not self.done:
            try:
                d = self.s.recv(4096)
            except (socket.timeout, BlockingIOError, OSError):
                continue
            with self.lock:
                for line in d.decode().split("\n"):
                    if line:
                        self.msgs.append((time.monotonic(), line))

    def all(self):
        with self.lock:
            return list(self.msgs)

    def since(self, t, prefix=""):
        return [(at, m) for at, m in self.all() if at >= t and m.startswith(prefix)]

    def wait_for(self, pred, timeout, after=0.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for at, m in self.all():
                if at >= after and pred(m):
                    return at, m
            time.sleep(0.02)
        return None

    def close(self):
        self.done = True
        self.thr.join(2)
        self.s.close()
