# MON=1 python examples/minimal.py  →  prints the dashboard URL
import math, time
import device_agent

mon = device_agent.start()                  # MON unset: a no-op monitor
wave = mon.records("wave", {"t": "f8", "value": "f4"})
mon.state.update(gain=1.0)

@mon.command(coalesce=True)                 # a slider: only the newest value matters
def set_gain(value: float) -> float:
    mon.state.update(gain=value)
    return value

try:
    while True:
        t = time.time()
        wave.publish(t=t, value=mon.state["gain"] * math.sin(2 * math.pi * t))
        time.sleep(0.01)
except KeyboardInterrupt:
    pass
