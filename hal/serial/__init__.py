"""The serial pilot/contactor board backend (``serial://``): wire protocol, host side, simulator.

A small microcontroller board drives each port's pilot PWM, measures the pilot, switches the
contactors and reads the jumper and GFCI inputs; the station talks to it over a UART. The
protocol is specified in ``docs/serial-protocol.md``. One job per module: ``protocol`` is the
wire format (construct); ``settings`` the ``serial://`` URL and its checks; ``link`` the
transport (device, frames, retries, heartbeats); ``state`` the host's model of the board (what
it reported and lacks, when it is lost; pilot states by ``hal.pilot``); ``backend`` the HAL
adapter (``open_hardware``); ``board`` the simulated board that tests and ``ampshare
board-sim`` run on a pseudo-terminal.
"""
