"""plant.py — the Modbus plant peer (plant_server.c, built with the project)
for the control tests, and the textbook reference they compare with.

PlantServer runs `plant_server`: a process model (the sim driver's models)
served over Modbus TCP on a sensor port and an actuator port, with faults on
the sensor port by signal (disconnect, freeze) and every actuator write in
its log.  Plain library code like peers.py.
"""
import os
import re
import signal

import peers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def plant_server_bin():
    """The plant_server built next to the binary under test, else build/."""
    cands = [os.environ.get("FB_PLANT_SERVER", "")]
    fb = os.environ.get("FB_BIN")
    if fb:
        cands.append(os.path.join(os.path.dirname(os.path.abspath(fb)), "plant_server"))
    cands.append(os.path.join(ROOT, "build", "plant_server"))
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    return None


class PlantServer:
    WRITE_RE = re.compile(r"^write u=(\S+) t=(\S+)$", re.M)

    def __init__(self, workdir, spec, u0=0.0, name="plant", two_ports=True):
        exe = plant_server_bin()
        if not exe:
            raise FileNotFoundError("plant_server not built (scripts/build.sh normal builds it into build/)")
        self.sensor_port = peers.free_port()
        self.actuator_port = peers.free_port() if two_ports else self.sensor_port
        while self.actuator_port == self.sensor_port and two_ports:
            self.actuator_port = peers.free_port()
        argv = [exe, "--sensor-port", self.sensor_port, "--plant", spec, "--u0", u0]
        if two_ports:
            argv += ["--actuator-port", self.actuator_port]
        self.proc = peers.Proc(argv, os.path.join(str(workdir), f"{name}.log"))
        peers.wait_port(self.sensor_port, proc=self.proc.p)
        if two_ports:
            peers.wait_port(self.actuator_port, proc=self.proc.p)

    def output(self):
        return self.proc.output()

    def writes(self):
        """[(value, monotonic seconds)] of every actuator write so far."""
        return [(float(v), float(t)) for v, t in self.WRITE_RE.findall(self.output())]

    def sensor_disconnect(self):
        """Toggle: the sensor port drops its clients and refuses connections."""
        os.kill(self.proc.pid, signal.SIGUSR1)

    def sensor_freeze(self):
        """Toggle: requests on the sensor port are never answered."""
        os.kill(self.proc.pid, signal.SIGUSR2)

    def stop(self):
        return self.proc.stop(signal.SIGTERM, 5)


# ------------------------------------------------------------- the textbook
def fopdt_pi_step(k, tau, dead, kc, ti, r0, r1, y0=None, t_end=15.0, dt=0.0005, h=0.0, lag=0.0):
    """Set-point step response of a first-order-plus-dead-time process
        tau·y' = y0 + k·u(t − dead) − y
    under the textbook PI controller u = Kc·(e + 1/Ti ∫e dt) started in
    equilibrium at r0.  With h > 0 the controller is sampled every h seconds
    (zero-order hold, measurement `lag` seconds old), as a gateway runs it;
    h = 0 is the continuous-time textbook curve.  Returns [(t, y)] after the
    step at t = 0."""
    if y0 is None:
        y0 = r0
    u_eq = (r0 - y0) / k
    n_dead = max(1, int(round(dead / dt)))
    hist = [u_eq] * n_dead  # the input as it was `dead` ago
    y_hist = [r0] * max(1, int(round(lag / dt)) + 1)
    y = r0
    integ = u_eq
    u = u_eq
    t = 0.0
    next_sample = 0.0
    out = []
    i = 0
    while t < t_end:
        y_meas = y_hist[0]
        if h <= 0:
            e = r1 - y
            u = kc * e + integ
            integ += kc * dt / ti * e
        elif t >= next_sample - 1e-12:
            e = r1 - y_meas
            u = kc * e + integ
            integ += kc * h / ti * e
            next_sample += h
        hist.append(u)
        ud = hist.pop(0)
        y += (y0 + k * ud - y) * (1 - pow(2.718281828459045, -dt / tau))
        y_hist.append(y)
        y_hist.pop(0)
        i += 1
        t = i * dt
        out.append((t, y))
    return out


def step_metrics(trace, r0, r1, band=0.02):
    """(overshoot in % of the step, settling time into ±band of the step) of [(t, y)]."""
    step = r1 - r0
    peak = max((y - r1) / step for _, y in trace)
    settle = 0.0
    for t, y in trace:
        if abs(y - r1) > band * abs(step):
            settle = t
    return max(0.0, peak * 100.0), settle
