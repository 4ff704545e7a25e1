"""The smallest useful monbridge device: one records channel and one command.

    MON=specs=examples/specs python examples/minimal.py   # prints the dashboard URL; Ctrl-C stops it
    python examples/minimal.py                           # MON unset: runs without any monitor

(``specs=`` names the directory of its one view; a bare ``MON=1`` shows ./specs.)
"""
import math
import time

import device_agent

mon = device_agent.start()  # reads MON; a no-op monitor when MON is unset
wave = mon.records("wave", {"t": "f8", "value": "f4"})
gain = 1.0
mon.state.update(gain=gain)


@mon.command(coalesce=True)
def set_gain(value: float) -> float:
    global gain
    gain = value
    mon.state.update(gain=value)
    return value


if __name__ == "__main__":
    try:
        while True:
            wave.publish(t=time.time(), value=gain * math.sin(2 * math.pi * time.time()))
            time.sleep(0.01)
    except KeyboardInterrupt:
        pass
