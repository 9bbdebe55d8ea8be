"""benchlib.py — what the Python benchmark drivers share (control_bench.py,
vib_bench.py): a free loopback port, an HTTP GET of the gateway's metrics
endpoint, and the CPU seconds of a process or of one of its named threads
read from /proc (utime + stime), so every benchmark counts CPU the same way."""
import os
import socket
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _stat_cpu(st):
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid, name):
    """CPU seconds of the first thread of pid called name (its comm), None if there is none."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                return _stat_cpu(f.read())
        except OSError:
            continue
    return None


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        return _stat_cpu(f.read())
