"""The serial pilot/contactor board backend (``serial://``): wire protocol, host side, simulator.

A small microcontroller board drives each port's pilot PWM, measures the pilot, switches the
contactors and reads the jumper and GFCI inputs; the station talks to it over a UART. The
protocol is specified in ``docs/serial-protocol.md``; ``protocol`` implements it with construct,
``backend`` is the host side (``open_hardware``), ``board`` is the simulated board that tests and
``ampshare board-sim`` run on a pseudo-terminal.
"""
